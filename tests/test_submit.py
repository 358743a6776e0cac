"""Scoring models trained elsewhere: predictions CSVs, exported models, and `export` of our own runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from digitsum_bench import data
from digitsum_bench.cli import main
from digitsum_bench.engine import metrics
from digitsum_bench.engine.runner import RunOptions, run_one
from digitsum_bench.scoring import predictions, submit

SUMS = np.array([3, 10, 17, 36, 0, 22])  # the hand-made dataset's labels
COMPARED = (*metrics.SUMMARY_KEYS, "per_sum")  # what evaluate --checkpoint reports too


@pytest.fixture
def six(tmp_path):
    """A 6-image .npz with known sums (blank images: only the labels matter to a CSV)."""
    path = tmp_path / "six.npz"
    images = np.zeros((len(SUMS), data.HEIGHT, data.WIDTH), dtype=np.uint8)
    data.save_npz(data.DigitSumData(images, SUMS.copy(), None, "six"), path)
    return path


def evaluate(capsys, *args: str) -> dict:
    """Run `digitsum-bench evaluate ...`; its last stdout line is the result as JSON."""
    assert main(["evaluate", *args]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def error(capsys, *args: str) -> str:
    """Run a command that must fail with one `error:` line on stderr and exit 2; returns that line."""
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


# ------------------------------------------------------------------------ predictions CSV


def test_csv_in_any_order_with_expected_sum(six, tmp_path, capsys):
    csv = tmp_path / "p.csv"
    # rows shuffled; "17.0" is an integer written as a float; image 3 (sum 36) predicted 35
    csv.write_text("index,sum,expected_sum\n2,17.0,17.2\n0,3,3\n5,22,21.5\n1,10,10\n4,0,0.5\n3,35,35.3\n\n")
    result = evaluate(capsys, "--predictions", str(csv), "--data", str(six))
    assert result["n"] == 6
    assert result["exact"] == pytest.approx(5 / 6)
    assert result["within_one"] == 1.0
    assert result["mse"] == pytest.approx(1 / 6)
    assert result["mse_raw"] == pytest.approx((0.2**2 + 0.5**2 + 0.5**2 + 0.7**2) / 6)
    assert result["per_sum"][36] == 0.0 and result["per_sum"][17] == 1.0 and result["per_sum"][1] is None


def test_csv_probability_columns_give_mse_raw(six, tmp_path):
    probs = np.zeros((6, 37))
    probs[np.arange(6), SUMS] = 0.5  # half on the true sum, half on one more (36: on 35)
    probs[np.arange(6), np.where(SUMS < 36, SUMS + 1, 35)] = 0.5
    lines = ["index,sum," + ",".join(f"p{s}" for s in range(37))]
    lines += [f"{i},{s}," + ",".join(f"{p:g}" for p in probs[i]) for i, s in enumerate(SUMS)]
    csv = tmp_path / "p.csv"
    csv.write_text("\n".join(lines))
    pred, raw = predictions.read_predictions(csv, 6)
    assert pred.tolist() == SUMS.tolist()
    assert raw.tolist() == pytest.approx((SUMS + np.where(SUMS < 36, 0.5, -0.5)).tolist())
    assert predictions.evaluate_predictions(csv, six)["mse_raw"] == pytest.approx(0.25)


BAD_CSVS = {
    "wrong row count": ("index,sum\n0,3\n1,10\n", "2 prediction rows for 6 images"),
    "missing index": ("index,sum\n0,3\n1,10\n2,17\n3,36\n3,36\n5,22\n", "index 4 is missing"),
    "index past the end": ("index,sum\n1,3\n2,10\n3,17\n4,36\n5,0\n6,22\n", "line 7: index 6 is outside 0..5"),
    "non-integer sum": ("index,sum\n0,3\n1,10.5\n2,17\n3,36\n4,0\n5,22\n", "line 3: sum '10.5' is not an integer"),
    "text as sum": ("index,sum\n0,3\n1,ten\n2,17\n3,36\n4,0\n5,22\n", "line 3: sum 'ten' is not an integer"),
    "sum above 36": ("index,sum\n0,3\n1,10\n2,37\n3,36\n4,0\n5,22\n", "line 4: sum 37 is outside 0..36"),
    "negative sum": ("index,sum\n0,-1\n1,10\n2,17\n3,36\n4,0\n5,22\n", "line 2: sum -1 is outside 0..36"),
    "no sum column": ("index,prediction\n0,3\n", "no column sum"),
    "unknown column": ("index,sum,expected\n0,3,3\n", "unknown column(s) expected"),
    "short row": ("index,sum\n0,3\n1\n2,17\n3,36\n4,0\n5,22\n", "line 3 has 1 fields"),
    "expected_sum not a number": ("index,sum,expected_sum\n0,3,x\n1,10,1\n2,17,1\n3,36,1\n4,0,1\n5,22,1\n",
                                  "line 2: expected_sum 'x' is not a number"),
    "incomplete probabilities": ("index,sum,p0,p1\n0,3,0.5,0.5\n", "p0..p36 incomplete"),
    "empty file": ("", "empty"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_CSVS))
def test_bad_csv_is_one_line_error(case, six, tmp_path, capsys):
    text, message = BAD_CSVS[case]
    csv = tmp_path / "bad.csv"
    csv.write_text(text)
    err = error(capsys, "evaluate", "--predictions", str(csv), "--data", str(six))
    assert str(csv) in err and message in err


def test_probabilities_that_are_not_a_distribution(six, tmp_path, capsys):
    row = lambda i, s: f"{i},{s}," + ",".join("0.5" if k in (s, 0) else "0" for k in range(37))  # noqa: E731
    csv = tmp_path / "p.csv"
    csv.write_text("\n".join(["index,sum," + ",".join(f"p{s}" for s in range(37))] + [row(i, s) for i, s in enumerate(SUMS)]))
    err = error(capsys, "evaluate", "--predictions", str(csv), "--data", str(six))
    assert "line 6: p0..p36 are not probabilities" in err  # image 4 has sum 0: all its mass on one column, total 0.5


# ------------------------------------------------------------------------ exported models


class ConstantLogits(nn.Module):
    """A model from elsewhere: always the same 37 logits, peaked at sum 17."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 37) + x.mean() * 0
        logits[:, 17] = 10.0
        return logits


class WrongShape(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :5]


BATCH_DIM = ({0: torch.export.Dim("batch")},)


def save_export(module: nn.Module, path, meta: dict | None) -> None:
    program = torch.export.export(module, (torch.zeros(2, 1, 40, 168),), dynamic_shapes=BATCH_DIM)
    torch.export.save(program, path, extra_files={submit.META_FILE: json.dumps(meta)} if meta else None)


def save_onnx(module: nn.Module, path, meta: dict | None) -> None:
    """An ONNX model from elsewhere, as the README tells people to write one."""
    import onnx

    program = torch.onnx.export(module.eval(), (torch.zeros(2, 1, 40, 168),), dynamo=True, dynamic_shapes=BATCH_DIM,
                                verbose=False, external_data=False)
    proto = program.model_proto
    if meta:
        onnx.helper.set_model_props(proto, {submit.META_FILE: json.dumps(meta)})
    path.write_bytes(proto.SerializeToString())


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_outside_model_scored_by_its_output_shape(fmt, six, tmp_path, capsys):
    path = tmp_path / f"const.{fmt}"
    (save_onnx if fmt == "onnx" else save_export)(ConstantLogits(), path, {"mean": 0.0, "std": 1.0})
    result = evaluate(capsys, "--model", str(path), "--data", str(six), *(["--trust-model"] if fmt == "pt2" else []))
    assert result["head"] == "sum37"
    assert result["exact"] == pytest.approx(1 / 6)  # only image 2 has sum 17
    expected = submit.metrics.expected_sums(ConstantLogits()(torch.zeros(1, 1, 40, 168)), "sum37").item()
    assert result["mse_raw"] == pytest.approx(float(np.mean((SUMS - expected) ** 2)))


def test_programs_need_trust(six, tmp_path, capsys):
    """A torch.export program runs with the user's rights: without --trust-model it is refused, unread."""
    save_export(ConstantLogits(), tmp_path / "const.pt2", {"mean": 0.0, "std": 1.0})
    err = error(capsys, "evaluate", "--model", str(tmp_path / "const.pt2"), "--data", str(six))
    assert "torch.export program (.pt2) is refused" in err and "--trust-model" in err


def test_bad_model_files_are_one_line_errors(six, tmp_path, capsys):
    def fails(path, message, *trust):
        err = error(capsys, "evaluate", "--model", str(path), "--data", str(six), *trust)
        assert str(path) in err and message in err, err

    fails(tmp_path / "none.pt2", "no such model file")
    (tmp_path / "junk.pt2").write_bytes(b"not a model")
    fails(tmp_path / "junk.pt2", "not an ONNX model, torch.export program (.pt2) or TorchScript file")
    torch.save({"model": nn.Linear(2, 2).state_dict()}, tmp_path / "ckpt.pt")
    fails(tmp_path / "ckpt.pt", "a torch.save file, not an exported model")
    save_export(ConstantLogits(), tmp_path / "nometa.pt2", None)
    fails(tmp_path / "nometa.pt2", "no digitsum.json in the archive", "--trust-model")
    save_export(ConstantLogits(), tmp_path / "badmeta.pt2", {"mean": 0.1})
    fails(tmp_path / "badmeta.pt2", "bad digitsum.json", "--trust-model")
    save_export(WrongShape(), tmp_path / "shape.pt2", {"mean": 0.0, "std": 1.0})
    fails(tmp_path / "shape.pt2", "output shape (6, 5) for 6 images is none of", "--trust-model")


# ------------------------------------------------------------------------ our runs, three ways


@pytest.mark.parametrize("name,head", [("r003_convnet4", "sum37"), ("ours_digitsum", "digits4")])
def test_checkpoint_model_and_predictions_agree(name, head, tmp_path, capsys):
    """One smoke run scored as a checkpoint, as an exported program and as its predictions CSV."""
    run_one(name, 0, RunOptions(budget="smoke", results=tmp_path, device="cpu", progress=False))
    checkpoint = str(next(tmp_path.glob(f"checkpoints/smoke/*/{name}/seed0/final.pt")))
    npz = str(tmp_path / "test.npz")
    assert main(["data", "make", "--split", "test", "--n", "64", "--out", npz]) == 0
    by_checkpoint = evaluate(capsys, "--checkpoint", checkpoint, "--data", npz, "--device", "cpu")

    # ONNX (the default) for both heads; the programs once: they are slow to export
    formats = ["onnx", "export", "torchscript"] if head == "digits4" else ["onnx"]
    for fmt in formats:
        model, csv = str(tmp_path / f"{fmt}.model"), str(tmp_path / f"{fmt}.csv")
        assert main(["export", "--checkpoint", checkpoint, "--out", model, *(["--format", fmt] if fmt != "onnx" else [])]) == 0
        trust = [] if fmt == "onnx" else ["--trust-model"]
        by_model = evaluate(capsys, "--model", model, "--data", npz, "--save-predictions", csv, *trust)
        by_csv = evaluate(capsys, "--predictions", csv, "--data", npz)
        assert by_model["head"] == head
        assert {k: by_model[k] for k in COMPARED} == {k: by_checkpoint[k] for k in COMPARED}, fmt
        assert {k: by_csv[k] for k in COMPARED} == {k: by_checkpoint[k] for k in COMPARED}, fmt
        assert by_csv["mse_raw"] == pytest.approx(by_model["mse_raw"])
        assert by_model["mse_raw"] != by_model["mse"]  # unrounded: the expected sums, not the decoded ones


def test_export_of_a_missing_checkpoint_is_one_line_error(tmp_path, capsys):
    err = error(capsys, "export", "--checkpoint", str(tmp_path / "final.pt"), "--out", str(tmp_path / "m.onnx"))
    assert "no such checkpoint" in err
    assert not (tmp_path / "m.onnx").exists()
