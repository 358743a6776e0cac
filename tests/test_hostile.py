"""Files and arguments from a hostile user, surface by surface: predictions, models, checkpoints, records,
recipe files, data files and the command line.

Each refused case asserts the exit status, one `error:` line on stderr (no traceback) and that nothing
was written; a crafted model or checkpoint must not run code (a marker file it would create stays absent).
"""

from __future__ import annotations

import io
import json
import os
import sys
import warnings
import zipfile
from contextlib import contextmanager

import numpy as np
import pytest
import torch
import torch.nn as nn
from record_factory import make_record, write_record

from digitsum_bench import __version__, data
from digitsum_bench.cli import main
from digitsum_bench.engine import launch, plan
from digitsum_bench.registry import recipes
from digitsum_bench.reporting.leaderboard import load_records
from digitsum_bench.scoring import predictions, submit

SUMS = [3, 10, 17, 36, 0, 22]
GOOD_CSV = "index,sum\n" + "".join(f"{i},{s}\n" for i, s in enumerate(SUMS))


class WritesAFile:
    """Unpickling this calls open(marker, "w"): the file appearing means code from the file ran."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class Linear37(nn.Module):
    """A model from elsewhere with weights: pixels -> 37 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(40 * 168, 37)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


@pytest.fixture
def work(tmp_path):
    """(inputs folder, output folder, a 6-image .npz); refused commands must leave the output folder empty."""
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    npz = inputs / "six.npz"
    data.save_npz(data.DigitSumData(np.zeros((6, 40, 168), np.uint8), np.array(SUMS), None, "six"), npz)
    return inputs, out, npz


def files(*folders) -> dict:
    return {p: p.stat().st_mtime_ns for folder in folders for p in sorted(folder.rglob("*"))}


def refused(capsys, argv: list[str], words: tuple[str, ...], *folders, code: int = 2) -> str:
    """Run the CLI: exit `code`, one error line holding `words`, and no file added or changed under `folders`."""
    before = files(*folders)
    assert main([str(a) for a in argv]) == code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, err
    assert files(*folders) == before
    return err


# ------------------------------------------------------------------------ predictions CSV

CSVS = {
    "no newline, too large": ("0" * (predictions.CSV_HEADER_BYTES + 6 * predictions.CSV_ROW_BYTES + 1), ("too large",)),
    "underscore digits": (GOOD_CSV.replace("1,10", "1,1_0"), ("line 3: sum '1_0' is not an integer",)),
    "unicode digits": (GOOD_CSV.replace("1,10", "1,١٠"), ("is not an integer",)),
    "hex float": (GOOD_CSV.replace("2,17", "2,0x11"), ("'0x11' is not an integer",)),
    "index nan": (GOOD_CSV.replace("0,3", "nan,3"), ("'nan' is not an integer",)),
    "index 1e400": (GOOD_CSV.replace("0,3", "1e400,3"), ("'1e400' is not an integer",)),
    "expected_sum inf": ("index,sum,expected_sum\n" + "".join(f"{i},{s},inf\n" for i, s in enumerate(SUMS)),
                         ("expected_sum 'inf' is not a number",)),
    "expected_sum 1e400": ("index,sum,expected_sum\n" + "".join(f"{i},{s},1e400\n" for i, s in enumerate(SUMS)),
                           ("too large",)),
    "expected_sum 1e200": ("index,sum,expected_sum\n" + "".join(f"{i},{s},1e200\n" for i, s in enumerate(SUMS)),
                           ("mse_raw overflows",)),
    "not UTF-8": (b"index,sum\n\xff\xfe,3\n", ("cannot read predictions",)),
    "a million columns": ("index,sum\n" + "0," * 10**6 + "\n", ("too large",)),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CSVS))
def test_hostile_predictions(case, work, capsys):
    inputs, out, npz = work
    text, words = CSVS[case]
    csv = inputs / "p.csv"
    csv.write_bytes(text if isinstance(text, bytes) else text.encode())
    refused(capsys, ["evaluate", "--predictions", csv, "--data", npz], (str(csv), *words), inputs, out)


@pytest.mark.parametrize("what", ["--predictions", "--model"])
def test_predictions_or_model_from_dev_zero(what, work, capsys):
    inputs, out, npz = work
    (inputs / "file").symlink_to("/dev/zero")
    refused(capsys, ["evaluate", what, inputs / "file", "--data", npz], ("not a regular file",), out)


def test_predictions_with_a_byte_order_mark(work, capsys):
    inputs, _, npz = work
    csv = inputs / "p.csv"
    csv.write_bytes(b"\xef\xbb\xbf" + GOOD_CSV.encode())
    assert main(["evaluate", "--predictions", str(csv), "--data", str(npz)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["exact"] == 1.0


# ------------------------------------------------------------------------ models

BATCH = ({0: torch.export.Dim("batch")},)
META = {"mean": 0.0, "std": 1.0}


def onnx_file(path, weight: np.ndarray, meta: dict | None = META, outputs: int = 1, external: bool = False,
              domain: str = ""):  # fmt: skip
    """A hand-built ONNX graph: Flatten -> MatMul with `weight` (6720, 37), optionally with a second output,
    its weight stored "outside the file", or its MatMul in a custom operator domain."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(weight.astype(np.float32), "w")
    if external:
        w.ClearField("raw_data")
        w.data_location = TensorProto.EXTERNAL
        w.external_data.add(key="location", value="/etc/hostname")
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"], domain=domain)]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 37])]
    if outputs == 2:
        nodes.append(helper.make_node("Identity", ["y"], ["y2"]))
        outs.append(helper.make_tensor_value_info("y2", TensorProto.FLOAT, ["B", 37]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 1, 40, 168])],
                              outs, initializer=[w])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    if meta is not None:
        helper.set_model_props(model, {submit.META_FILE: json.dumps(meta)})
    path.write_bytes(model.SerializeToString())
    return path


def test_onnx_model_scored_without_trust(work, capsys):
    inputs, _, npz = work
    weight = np.zeros((40 * 168, 37))
    model = onnx_file(inputs / "m.onnx", weight)  # all-zero logits: the expected sum is 18
    assert main(["evaluate", "--model", str(model), "--data", str(npz)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["head"] == "sum37" and result["mse_raw"] == pytest.approx(np.mean((np.array(SUMS) - 18) ** 2))


ONNX_CASES = {
    "NaN outputs": (dict(weight=np.full((40 * 168, 37), np.nan)), "outputs NaN or inf"),
    "tensor outside the file": (dict(external=True), "stored outside the file"),
    "two outputs": (dict(outputs=2), "expected one of each"),
    "no metadata": (dict(meta=None), "no digitsum.json in the metadata"),
    "metadata nested 100,000 deep": (dict(meta="[" * 100_000), "bad digitsum.json"),
    "metadata std 0": (dict(meta={"mean": 0, "std": 0}), "std must be positive"),
    "custom operator": (dict(domain="evil.ops"), "cannot load the ONNX model"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(ONNX_CASES))
def test_hostile_onnx_models(case, work, capsys):
    inputs, out, npz = work
    kwargs, words = ONNX_CASES[case]
    kwargs = {"weight": np.zeros((40 * 168, 37)), **kwargs}
    if isinstance(kwargs.get("meta"), str):  # raw text, not JSON of a dict
        from onnx import helper

        path = onnx_file(inputs / "m.onnx", kwargs["weight"], meta=None)
        model = __import__("onnx").load(str(path))
        helper.set_model_props(model, {submit.META_FILE: kwargs["meta"]})
        path.write_bytes(model.SerializeToString())
    else:
        path = onnx_file(inputs / "m.onnx", **kwargs)
    refused(capsys, ["evaluate", "--model", path, "--data", npz, "--save-predictions", out / "p.csv"],
            (str(path), words), inputs, out)


@pytest.mark.parametrize("content", [b"", b"\x00" * 100, b"garbage that protobuf may parse" * 3])
def test_model_files_that_are_not_models(content, work, capsys):
    inputs, out, npz = work
    (inputs / "m.onnx").write_bytes(content)
    refused(capsys, ["evaluate", "--model", inputs / "m.onnx", "--data", npz], ("not an ONNX model",), inputs, out)


def test_programs_are_refused_without_trust(work, capsys):
    inputs, out, npz = work
    save_pt2(inputs / "m.pt2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(Linear37().eval(), torch.zeros(2, 1, 40, 168)), inputs / "m.ts",
                       _extra_files={submit.META_FILE: json.dumps(META)})
    refused(capsys, ["evaluate", "--model", inputs / "m.pt2", "--data", npz], ("torch.export program (.pt2) is refused",
                                                                              "--trust-model"), inputs, out)
    refused(capsys, ["evaluate", "--model", inputs / "m.ts", "--data", npz], ("TorchScript file is refused",), inputs, out)
    assert main(["evaluate", "--model", str(inputs / "m.ts"), "--data", str(npz), "--trust-model"]) == 0  # trusted


def save_pt2(path) -> None:
    program = torch.export.export(Linear37().eval(), (torch.zeros(2, 1, 40, 168),), dynamic_shapes=BATCH)
    torch.export.save(program, path, extra_files={submit.META_FILE: json.dumps(META)})


def rewrite_pt2(source, target, change) -> None:
    """Copy a .pt2 archive entry by entry; `change(name, bytes)` returns an entry's new bytes."""
    with zipfile.ZipFile(source) as z, zipfile.ZipFile(target, "w") as out:
        for name in z.namelist():
            out.writestr(name, change(name, z.read(name)))


def pickled(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def use_pickle_weight(marker):
    """The first weight marked use_pickle, its bytes a pickle that writes `marker`."""
    def change(name, content):
        if name.endswith("weights_config.json"):
            config = json.loads(content)
            first = next(iter(config["config"].values()))
            first["use_pickle"] = True
            return json.dumps(config).encode()
        return pickled(WritesAFile(marker)) if name.endswith("/weight_0") else content
    return change


def pickled_sample_inputs(marker):
    return lambda name, content: pickled(((WritesAFile(marker),), {})) if "sample_inputs" in name else content


PT2_ATTACKS = {"use_pickle weight": (use_pickle_weight, "needs full pickle for"),
               "pickled sample inputs": (pickled_sample_inputs, "sample_inputs/model.pt needs full pickle")}


@pytest.mark.parametrize("attack", list(PT2_ATTACKS))
def test_pt2_entries_needing_pickle_are_refused_even_when_trusted(attack, work, capsys):
    inputs, out, npz = work
    make, words = PT2_ATTACKS[attack]
    save_pt2(inputs / "clean.pt2")
    # torch's own loader runs the crafted archive's code: the attack is real
    naive = inputs / "ran-under-torch.export.load"
    rewrite_pt2(inputs / "clean.pt2", inputs / "naive.pt2", make(naive))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.export.load(inputs / "naive.pt2")
        except Exception:  # noqa: BLE001 - the code has run by the time the archive fails to load
            pass
    assert naive.exists()
    capsys.readouterr()  # torch's own log lines

    marker = out / "pwned"
    rewrite_pt2(inputs / "clean.pt2", inputs / "evil.pt2", make(marker))
    refused(capsys, ["evaluate", "--model", inputs / "evil.pt2", "--data", npz, "--trust-model"],
            (words, "refused even with --trust-model"), inputs, out)
    assert not marker.exists()


def test_pt2_with_unexpected_entries_is_refused_even_when_trusted(work, capsys):
    """Legacy weight files, custom or opaque objects and compiled AOTInductor code are not plain tensors; an entry
    twice may be read one way by torch and another by the check."""
    inputs, out, npz = work
    save_pt2(inputs / "clean.pt2")
    with zipfile.ZipFile(inputs / "clean.pt2") as z:
        root = z.namelist()[0].split("/")[0]
    for entry in ("data/constants/custom_obj_0", "data/weights/model.pt", "data/aotinductor/model/model.so",
                  "data/weights/model_weights_config.json"):
        rewrite_pt2(inputs / "clean.pt2", inputs / "evil.pt2", lambda name, content: content)
        with zipfile.ZipFile(inputs / "evil.pt2", "a") as z, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Duplicate name": the point of the last case
            z.writestr(f"{root}/{entry}", pickled(WritesAFile(out / "pwned")))
        refused(capsys, ["evaluate", "--model", inputs / "evil.pt2", "--data", npz, "--trust-model"],
                (f"archive entry '{root}/{entry}'",), inputs, out)
    assert not (out / "pwned").exists()


# ------------------------------------------------------------------------ checkpoints


def checkpoint(path, recipe: str, model: dict, **config):
    torch.save({"recipe": recipe, "config": config, "model": model}, path)
    return path


@pytest.mark.parametrize("case", ["NaN weights", "members 10**9", "members text", "config not a dict"])
def test_hostile_checkpoints(case, work, capsys):
    inputs, out, npz = work
    weights = recipes.get_recipe("r003_convnet4").model().state_dict()
    if case == "NaN weights":
        nan = {k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in weights.items()}
        ckpt = checkpoint(inputs / "final.pt", "r003_convnet4", nan)
        words = ("weights hold NaN or inf",)
    elif case == "members 10**9":
        ckpt = checkpoint(inputs / "final.pt", "ours_digitsum", {}, members=10**9)
        words = ("config members 1000000000 is not 1..5",)
    elif case == "members text":
        ckpt = checkpoint(inputs / "final.pt", "ours_digitsum", {}, members="5")
        words = ("config members 5 is not 1..5",)
    else:
        torch.save({"recipe": "r003_convnet4", "config": [1, 2], "model": weights}, inputs / "final.pt")
        ckpt, words = inputs / "final.pt", ()
        assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(npz), "--device", "cpu"]) == 0
        capsys.readouterr()
        return
    refused(capsys, ["evaluate", "--checkpoint", ckpt, "--data", npz, "--device", "cpu"], (str(ckpt), *words), inputs, out)
    refused(capsys, ["export", "--checkpoint", ckpt, "--out", out / "m.onnx"], words, inputs, out)


# ------------------------------------------------------------------------ records

RECORDS = {
    "metric 10**400": lambda r: r["metrics"]["test"].update(mse=10**400),
    "exact NaN": lambda r: r["metrics"]["val"].update(exact=float("nan")),
    "exact 2": lambda r: r["metrics"]["val"].update(exact=2),
    "mse Infinity": lambda r: r["metrics"]["test"].update(mse=float("inf")),
    "assumptions not a list": lambda r: r["config"].update(assumptions="be careful"),
    "history epoch a string": lambda r: r["history"][0].update(epoch="1"),
    "per_sum too short": lambda r: r["metrics"]["test"].update(per_sum=[0.5]),
    "confusion of strings": lambda r: r["metrics"]["test"].update(confusion=[["x"] * 37] * 37),
    "seed negative": lambda r: r.update(seed=-1),
    "versions a number": lambda r: r["versions"].update(torch=2.1),
    "claim value text": lambda r: r.update(claimed=[{"metric": "exact", "value": "high", "split": "val"}]),
    "finished not a time": lambda r: r.update(finished="yesterday"),
    "device a list": lambda r: r.update(device=["cpu"]),
    "code version garbage": lambda r: r.update(code_version="not a version"),
}  # fmt: skip
RAW_RECORDS = {
    "100,000 nested brackets": "[" * 100_000 + "]" * 100_000,
    "nested 500 deep": "[" * 500 + "]" * 500,
    "a 5000-digit integer": '{"schema": 1, "seed": ' + "9" * 5000 + "}",
    "over the size limit": '{"schema": 1, "pad": "' + " " * (5 << 20) + '"}',
    "not UTF-8": b'{"schema": 1, "recipe": "\xff"}',
}


RECORD_CASES = [*RECORDS, *RAW_RECORDS, "symlink to /dev/zero"]


def hostile_record(results, case: str, seed: int):
    """Write record `seed` of r003_convnet4 (smoke, synth) malformed as `case` says; returns its path."""
    synth = data.dataset_id("synth")
    path = results / "records" / "smoke" / synth / "r003_convnet4" / f"seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if case in RECORDS:
        record = make_record("r003_convnet4", seed, budget="smoke", dataset_id=synth)
        RECORDS[case](record)
        path.write_text(json.dumps(record))
    elif case in RAW_RECORDS:
        content = RAW_RECORDS[case]
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    else:
        path.symlink_to("/dev/zero")
    return path


def good_record(results) -> None:
    write_record(results, make_record("r003_convnet4", 0, budget="smoke", dataset_id=data.dataset_id("synth"),
                                      code_version=__version__))


@pytest.mark.parametrize("case", RECORD_CASES)
def test_hostile_record_is_corrupt_in_status(case, tmp_path, capsys):
    """`status` shows the record as corrupt with the reason, and the leaderboard's reader skips it, warning once."""
    good_record(tmp_path)
    path = hostile_record(tmp_path, case, 1)
    before = path.read_bytes()[:100] if path.is_file() else None
    assert main(["status", "--results", str(tmp_path), "--budget", "smoke", "--recipe", "r003_convnet4"]) == 0
    out = capsys.readouterr().out
    assert f"{path}: corrupt record (" in out and "1 finished, 1 corrupt" in out, out
    with pytest.warns(UserWarning) as caught:
        assert len(load_records(tmp_path)) == 1
    assert [str(w.message) for w in caught if str(path) in str(w.message)] == [f"skipped {path}: " + out.split(
        f"{path}: ")[1].splitlines()[0]]
    assert (path.read_bytes()[:100] if path.is_file() else None) == before


@contextmanager
def stderr_warnings():
    """Warnings as the CLI prints them (pytest would otherwise collect them): on stderr, one line each."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(message, category, filename, lineno))
        yield


def test_report_skips_every_hostile_record_with_one_line_each(tmp_path, capsys):
    good_record(tmp_path)
    paths = [hostile_record(tmp_path, case, seed) for seed, case in enumerate(RECORD_CASES, start=1)]
    with stderr_warnings():
        assert main(["report", "--results", str(tmp_path)]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert sorted(lines) == sorted(f"warning: skipped {p}: corrupt record (" + line.split(f"{p}: corrupt record (")[1]
                                   for p in paths for line in lines if f"{p}: " in line)
    assert len(lines) == len(paths)
    rows = [line for line in (tmp_path / "leaderboard.md").read_text().splitlines() if line.startswith("| `r0")]
    assert len(rows) == 1 and "| 1/3 |" in rows[0]  # the good record alone (a smoke check: in the markdown only)


def test_run_with_nothing_to_do_past_a_corrupt_record(tmp_path, capsys, monkeypatch):
    """One bad record copied in does not break every later `run` into the folder."""
    synth = data.dataset_id("synth")
    write_record(tmp_path, make_record("r003_convnet4", 0, budget="smoke", dataset_id=synth, code_version=__version__))
    bad = write_record(tmp_path, make_record("r003_convnet4", 1, budget="smoke", dataset_id=synth), name="seed1.json")
    bad.write_text("[" * 100_000)
    with stderr_warnings():
        assert main(["run", "--recipe", "r003_convnet4", "--budget", "smoke", "--results", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "0 run(s) to do, 1 already finished" in captured.out and "leaderboard:" in captured.out
    assert f"warning: skipped {bad}: corrupt record (nested too deeply)" in captured.err
    assert "Traceback" not in captured.err


BOOKKEEPING = {
    "failure marker a list": ("seed1.failed.json", "[1, 2]", "failed", "unreadable failure marker"),
    "failure marker from /dev/zero": ("seed1.failed.json", None, "failed", "unreadable failure marker"),
    "lock naming pid 10**30": ("seed1.lock", '{"pid": ' + str(10**30) + ', "host": "%s"}', "missing", ""),
    "lock from /dev/zero": ("seed1.lock", None, "missing", ""),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BOOKKEEPING))
def test_hostile_locks_and_failure_markers(case, tmp_path, capsys):
    """Files beside the records that `status` and `run` read: a bad one is shown as such, never a traceback."""
    import socket

    name, content, state, detail = BOOKKEEPING[case]
    good_record(tmp_path)
    path = tmp_path / "records" / "smoke" / data.dataset_id("synth") / "r003_convnet4" / name
    if content is None:
        path.symlink_to("/dev/zero")
    else:
        path.write_text(content.replace("%s", socket.gethostname()))
    assert main(["status", "--results", str(tmp_path), "--budget", "smoke", "--recipe", "r003_convnet4"]) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("r003_convnet4") and " 1 " in line]
    assert row[0].split()[3] == state and detail in row[0]


def test_hostile_estimate_notes_are_ignored(tmp_path, capsys):
    good_record(tmp_path)
    notes = tmp_path / "estimates" / "smoke" / data.dataset_id("synth")
    notes.mkdir(parents=True)
    (notes / "a.json").write_text('{"recipe": "r002_attention_cnn", "budget": "smoke", "dataset_id": "x", '
                                  '"estimated_seconds": "forever"}')
    (notes / "b.json").symlink_to("/dev/zero")
    assert main(["report", "--results", str(tmp_path)]) == 0
    assert "r002_attention_cnn" not in (tmp_path / "leaderboard.md").read_text()


# ------------------------------------------------------------------------ recipe files

RECIPE_FILES = {
    "returns None": ("@register\ndef my_a():\n    return None\n", "recipe my_a: its function returns NoneType"),
    "another name": ("@register\ndef my_b():\n    return replace(get_recipe('r003_convnet4'), name='zzz')\n",
                     "recipe function my_b returns a recipe named 'zzz'"),
    "sys.exit(3)": ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
    "raises in the function": ("@register\ndef my_c():\n    raise RuntimeError('boom')\n",
                               "recipe my_c: its function raises RuntimeError: boom"),
    "registers nothing": ("x = 1\n", "registers no recipe"),
    "a name taken": ("@register\ndef r003_convnet4():\n    return None\n", "registered twice"),
    "syntax error": ("def (:\n", "SyntaxError"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(RECIPE_FILES))
def test_hostile_recipe_files(case, tmp_path, capsys):
    body, words = RECIPE_FILES[case]
    path = tmp_path / "mine.py"
    path.write_text("from dataclasses import replace\nfrom digitsum_bench.registry.recipes import get_recipe, register\n" + body)
    known = recipes.list_recipes()
    refused(capsys, ["list", "--recipes-from", path], (str(path), words), tmp_path)
    assert recipes.list_recipes() == known  # nothing half-registered


# ------------------------------------------------------------------------ data files


def npz_declaring(path, shape, dtype="<f8") -> None:
    """An .npz whose 'images' member declares `shape` in its header, with almost no data behind it: what a
    decompression bomb makes numpy allocate."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("images.npy", header.getvalue() + b"\0" * 1000)
        z.writestr("sums.npy", _npy(np.zeros(shape[0] if shape[0] < 10**6 else 1, np.uint8)))


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_npz_inflating_past_the_limit(work, capsys):
    inputs, out, _ = work
    npz_declaring(inputs / "bomb.npz", (200_000, 40, 168))  # 10.8 GB of float64 from a few kB
    refused(capsys, ["data", "check", inputs / "bomb.npz"], ("inflate to 10,752,200,000 bytes", "over the 1 GiB"), inputs, out)


@pytest.mark.parametrize("case", ["pixel just above 1", "0..1 with a few 2s"])
def test_ambiguous_float_range(case, work, capsys):
    inputs, out, _ = work
    images = np.random.default_rng(0).random((6, 40, 168)).astype(np.float32)
    images[0, 0, :3] = 1.0000001 if case == "pixel just above 1" else 2.0
    np.savez(inputs / "f.npz", images=images, sums=np.array(SUMS))
    refused(capsys, ["data", "check", inputs / "f.npz"], ("ambiguous", "0..1 or 0..255"), inputs, out)
    refused(capsys, ["evaluate", "--predictions", inputs / "p.csv", "--data", inputs / "f.npz"], ("ambiguous",), inputs, out)


def test_dev_zero_as_data(work, capsys):
    inputs, out, _ = work
    (inputs / "z.npz").symlink_to("/dev/zero")
    refused(capsys, ["data", "check", inputs / "z.npz"], ("not a regular file",), out)
    (inputs / "course").mkdir()
    (inputs / "course" / "data0.npy").symlink_to("/dev/zero")
    np.save(inputs / "course" / "lab0.npy", np.zeros(6, np.uint8))
    refused(capsys, ["data", "check", inputs / "course"], ("data0.npy: not a regular file",), out)


# ------------------------------------------------------------------------ command-line arguments

ARGUMENTS = {
    "data make --n huge": (["data", "make", "--split", "test", "--n", "1000000000000"], "--n 1000000000000: a generated set"),
    "data make --n 0": (["data", "make", "--split", "test", "--n", "0"], "--n 0: a generated set holds 1.."),
    "data make --n -3": (["data", "make", "--split", "test", "--n", "-3"], "--n -3"),
    "data make --seed -1": (["data", "make", "--split", "test", "--n", "4", "--seed", "-1"], "must be non-negative"),
    "data show --n 0": (["data", "show", "{npz}", "--n", "0"], "--n 0: show at least 1 image"),
    "data show --n -3": (["data", "show", "{npz}", "--n", "-3"], "--n -3"),
    "data show --seed -3": (["data", "show", "{npz}", "--seed", "-3"], "--seed -3"),
    "--trust-model without --model": (["evaluate", "--predictions", "{in}/p.csv", "--data", "{npz}", "--trust-model"],
                                      "--trust-model goes with --model"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(ARGUMENTS))
def test_hostile_arguments(case, work, capsys):
    inputs, out, npz = work
    argv, words = ARGUMENTS[case]
    argv = [a.format(npz=npz, **{"in": inputs}) for a in argv]
    if argv[:2] in (["data", "make"], ["data", "show"]):
        argv += ["--out", str(out / "x.npz" if argv[1] == "make" else out / "x.png")]
    refused(capsys, argv, (words,), inputs, out)


def test_named_recipe_runs_whatever_the_cpu_estimate(tmp_path, capsys, monkeypatch):
    """The README's main command never exits 0 without a result: the CPU limit is for --all only."""
    started = []

    def inline(jobs, *a):
        started.extend((j.recipe, s) for j in jobs for s in j.seeds)
        return launch.Outcome(started=len(jobs), finished=len(started))

    monkeypatch.setattr(plan, "pending", lambda names, seeds, *a: [(n, s) for n in names for s in seeds])
    monkeypatch.setattr(plan, "estimate_seconds", lambda *a, **k: 10**6)  # far over any limit
    monkeypatch.setattr(plan, "write_estimate", lambda *a: None)
    monkeypatch.setattr(launch, "_inline", inline)
    argv = ["run", "--budget", "quick", "--device", "cpu", "--results", str(tmp_path), "--no-report"]
    assert main([*argv, "--recipe", "ours_digitsum"]) == 0
    assert started == [("ours_digitsum", 0)]
    started.clear()
    assert main([*argv, "--all"]) == 2  # nothing ran: no success
    assert started == [] and "needs a GPU at the quick budget" in capsys.readouterr().out


def test_broken_pipe_is_quiet(tmp_path, monkeypatch, capsys):
    """`digitsum-bench list | head -1`: the reader stops, the command ends without a traceback."""
    read, write = os.pipe()
    os.close(read)
    stdout = os.fdopen(write, "w", buffering=1)
    monkeypatch.setattr(sys, "stdout", stdout)
    assert main(["status", "--results", str(tmp_path)]) == 141
    monkeypatch.undo()
    stdout.close()
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------------ round two: MNIST folders, SLURM settings, time limits

DIGITS = np.random.default_rng(0).integers(0, 256, (40, 28, 28), dtype=np.uint8)
LABELS = np.arange(40, dtype=np.uint8) % 10


def idx_bytes(array: np.ndarray, magic: bytes | None = None) -> bytes:
    """An MNIST idx file: magic (0x08 uint8 + rank unless given), big-endian sizes, then the bytes."""
    magic = bytes([0, 0, 8, array.ndim]) if magic is None else magic
    return magic + b"".join(int(s).to_bytes(4, "big") for s in array.shape) + array.astype(np.uint8).tobytes()


MNIST_FOLDERS = {
    "empty images file": ({"images": b""}, ("train-images-idx3-ubyte: 0 bytes, too short for an idx header",)),
    "empty labels file": ({"labels": b""}, ("train-labels-idx1-ubyte: 0 bytes, too short",)),
    "truncated header": ({"images": idx_bytes(DIGITS)[:6]}, ("6 bytes, too short for an idx header",)),
    "truncated data": ({"images": idx_bytes(DIGITS)[:-100]}, ("declares 40 items (31,360 bytes) but the file holds 31,260",)),
    "gzip magic": ({"images": b"\x1f\x8b\x08\x03" + idx_bytes(DIGITS)[4:]}, ("idx magic 1f8b0803, expected 00000803",)),
    "type code 10": ({"images": idx_bytes(DIGITS, b"\0\0\x0a\x03")}, ("idx magic 00000a03",)),
    "int8 images": ({"images": idx_bytes(DIGITS, b"\0\0\x09\x03")}, ("idx magic 00000903", "(uint8, 3-D)")),
    "2-D images": ({"images": idx_bytes(DIGITS.reshape(40, 784))}, ("idx magic 00000802, expected 00000803",)),
    "5x5 digits": ({"images": idx_bytes(DIGITS[:, :5, :5])}, ("items of shape (5, 5), expected (28, 28)",)),
    "zero count": ({"images": idx_bytes(DIGITS[:0]), "labels": idx_bytes(LABELS[:0])}, ("holds no items",)),
    "2-D labels": ({"labels": idx_bytes(LABELS.reshape(20, 2))}, ("expected 00000801 (uint8, 1-D)",)),
    "fewer labels": ({"labels": idx_bytes(LABELS[:30])}, ("40 training images but 30 labels",)),
    "label 12": ({"labels": idx_bytes(np.arange(40) % 13)}, ("labels span 0..12, expected 0..9",)),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MNIST_FOLDERS))
def test_hostile_mnist_folders(case, work, capsys):
    inputs, out, _ = work
    raw = inputs / "MNIST" / "raw"
    raw.mkdir(parents=True)
    content, words = MNIST_FOLDERS[case]
    content = {"images": idx_bytes(DIGITS), "labels": idx_bytes(LABELS)} | content
    for prefix in ("train", "t10k"):  # torchvision's own check wanted all four files
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(content["images"])
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(content["labels"])
    argv = ["data", "make", "--split", "test", "--n", "5", "--out", out / "x.npz", "--source", inputs]
    refused(capsys, argv, words, inputs, out)


def test_legacy_mnist_pickles_are_not_read(work, capsys):
    inputs, out, _ = work
    processed = inputs / "MNIST" / "processed"
    processed.mkdir(parents=True)
    for name in ("training.pt", "test.pt"):
        (processed / name).write_bytes(pickled(WritesAFile(inputs / "ran")))
    argv = ["data", "make", "--split", "test", "--n", "5", "--out", out / "x.npz", "--source", inputs]
    refused(capsys, argv, ("test.pt: a legacy torchvision pickle, not read", "MNIST/raw/*-ubyte"), inputs, out)
    assert not (inputs / "ran").exists()


SLURM_RUN = ["run", "--recipe", "r003_convnet4", "--budget", "smoke", "--device", "cpu", "--no-report"]
SLURM_CONFIGS = {
    "Latin-1": ('partition = "gpü"\n'.encode("latin-1"), ("cannot read SLURM config", "'utf-8' codec")),
    "nested 3,000 deep": (b"time = " + b"[" * 3000 + b"]" * 3000 + b"\n", ("nested too deeply",)),
    "time a string": (b'time = "60"\n', ("time = '60': expected a whole number from 1 to",)),
    "gpus true": (b"gpus = true\n", ("gpus = True: expected a whole number",)),
    "mem_gb a float": (b"mem_gb = 32.5\n", ("mem_gb = 32.5",)),
    "parallel 0": (b"parallel = 0\n", ("parallel = 0: expected a whole number from 1 to",)),
    "cpus a table": (b"[cpus]\nn = 1\n", ("cpus = {'n': 1}",)),
    "partition a number": (b"partition = 3\n", ("partition = 3: expected a partition name",)),
    "partition with a newline": (b'partition = "gpu\\n#SBATCH --wrap=x"\n', ("expected a partition name",)),
    "64 kB of comments": (b"#" * (65 << 10), ("too large for a SLURM config",)),
}  # fmt: skip


@pytest.mark.parametrize("case", [*SLURM_CONFIGS, "/dev/zero", "FIFO"])
def test_hostile_slurm_configs(case, work, capsys, monkeypatch):
    inputs, out, _ = work
    monkeypatch.setattr(launch, "launch", lambda *a, **k: pytest.fail("launched with a bad SLURM config"))
    config = inputs / "slurm.toml"
    if case == "/dev/zero":
        config.symlink_to("/dev/zero")
    elif case == "FIFO":  # reading it would wait for a writer forever
        os.mkfifo(config)
    else:
        config.write_bytes(SLURM_CONFIGS[case][0])
    words = ("not a regular file",) if case in ("/dev/zero", "FIFO") else SLURM_CONFIGS[case][1]
    argv = [*SLURM_RUN, "--launcher", "slurm", "--slurm-config", config, "--results", out]
    refused(capsys, argv, (str(config), *words), inputs, out)


@pytest.mark.parametrize("flag,value", [("--time", "0"), ("--mem-gb", "-1"), ("--partition", "gpu;rm")])
def test_hostile_slurm_options(flag, value, work, capsys, monkeypatch):
    _, out, _ = work
    monkeypatch.setattr(launch, "launch", lambda *a, **k: pytest.fail("launched with a bad SLURM option"))
    refused(capsys, [*SLURM_RUN, "--launcher", "slurm", flag, value, "--results", out], (f"{flag} ",), out)


@pytest.mark.parametrize("limit", ["99999999999999999999h", pytest.param("9" * 401 + "h", id="401 nines: inf")])
def test_huge_time_limit(limit, work, capsys):
    _, out, _ = work
    refused(capsys, [*SLURM_RUN, "--time-limit", limit, "--results", out], ("over a year",), out)


def test_slurm_launcher_without_slurm_is_refused(work, capsys, monkeypatch):
    """Without `srun`, submitit would train on this machine and exit 0: the user asked for a cluster."""
    inputs, out, _ = work
    monkeypatch.setenv("PATH", str(inputs))  # no srun, no sbatch
    words = ("--launcher slurm: no SLURM here", "--launcher local")
    refused(capsys, [*SLURM_RUN, "--launcher", "slurm", "--results", out], words, out)


# ------------------------------------------------------------------------ ONNX models reading files, allocating, looping


def onnx_graph_model(path, nodes, output: str, initializers=(), functions=(), domains=("",), sparse=()):
    """A hand-built ONNX model: input x (B,1,40,168), `nodes`, one float output named `output`."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 1, 40, 168])],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)], initializer=initializers,
                              sparse_initializer=sparse)
    opsets = [helper.make_opsetid(d, 17 if d == "" else 1) for d in domains]
    model = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
    helper.set_model_props(model, {submit.META_FILE: json.dumps(META)})
    path.write_bytes(model.SerializeToString())
    return path


def outside(name: str, location: str):
    """Six uint8 values that onnxruntime reads from `location`, a file named relative to a folder."""
    from onnx import TensorProto, helper

    values = helper.make_tensor(name, TensorProto.UINT8, [6], b"\0" * 6, raw=True)
    values.ClearField("raw_data")
    values.data_location = TensorProto.EXTERNAL
    values.external_data.add(key="location", value=location)
    return values


def leaking_nodes(location: str, out: str = "y"):
    """A Constant whose sparse_value lies outside the file, cast to float: its bytes become six predicted sums."""
    from onnx import TensorProto, helper, numpy_helper

    sparse = helper.make_sparse_tensor(outside("v", location), numpy_helper.from_array(np.arange(6), "i"), [6])
    return [helper.make_node("Constant", [], ["leak"], sparse_value=sparse),
            helper.make_node("Cast", ["leak"], [out], to=TensorProto.FLOAT)]


def leaking_model(path, place: str, location: str):
    """A model whose predictions are the bytes of `location`, the leaking Constant sitting at `place`."""
    from onnx import TensorProto, helper, numpy_helper

    zeros = numpy_helper.from_array(np.zeros(6, np.float32), "zeros")
    if place == "graph":
        return onnx_graph_model(path, leaking_nodes(location), "y")
    if place == "Loop body":
        body = helper.make_graph(
            [helper.make_node("Identity", ["c"], ["c_out"]), *leaking_nodes(location, "v_out")], "body",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("c", TensorProto.BOOL, []),
             helper.make_tensor_value_info("v", TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])  # fmt: skip
        loop = helper.make_node("Loop", ["one", "", "zeros"], ["y"], body=body)
        return onnx_graph_model(path, [loop], "y", [numpy_helper.from_array(np.array(1), "one"), zeros])
    if place == "If branch":
        branch = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
        then = helper.make_graph(leaking_nodes(location), "then", [], branch)
        other = helper.make_graph([helper.make_node("Identity", ["zeros"], ["y"])], "else", [], branch)
        choice = helper.make_node("If", ["yes"], ["y"], then_branch=then, else_branch=other)
        return onnx_graph_model(path, [choice], "y", [numpy_helper.from_array(np.array(True), "yes"), zeros])
    function = helper.make_function("evil", "Leak", [], ["y"], leaking_nodes(location), [helper.make_opsetid("", 17)])
    return onnx_graph_model(path, [helper.make_node("Leak", [], ["y"], domain="evil")], "y", functions=[function],
                            domains=("", "evil"))


@pytest.mark.parametrize("place,location", [("graph", "secret.bin"), ("graph", "sub/secret2.txt"),
                                            ("Loop body", "secret.bin"), ("If branch", "secret.bin"),
                                            ("function", "secret.bin")])  # fmt: skip
def test_onnx_model_reads_no_file_from_the_scorers_disk(place, location, work, capsys, monkeypatch):
    """A tensor stored outside the file, wherever it sits, would have onnxruntime read a file of the scorer's."""
    inputs, out, npz = work
    monkeypatch.chdir(inputs.parent)
    for folder in (inputs, inputs.parent):  # next to the model and in the working directory
        (folder / "sub").mkdir()
        (folder / "secret.bin").write_bytes(b"SECRET" * 4)
        (folder / "sub" / "secret2.txt").write_bytes(b"secret" * 4)
    model = leaking_model(inputs / "m.onnx", place, location)
    refused(capsys, ["evaluate", "--model", model, "--data", npz, "--save-predictions", out / "p.csv"],
            (str(model), "stored outside the file"), inputs, out)
    assert not (out / "p.csv").exists()  # no predictions spelling S, E, C, R, E, T


def test_onnxruntime_resolves_no_path_even_past_the_check(work, capsys, monkeypatch):
    """Were a tensor outside the file to slip past the check, onnxruntime finds no folder to read it from."""
    inputs, out, npz = work
    monkeypatch.chdir(inputs)
    (inputs / "secret.bin").write_bytes(b"SECRET" * 4)
    monkeypatch.setattr(submit, "_outside_tensor", lambda proto: None)
    model = leaking_model(inputs / "m.onnx", "graph", "secret.bin")
    refused(capsys, ["evaluate", "--model", model, "--data", npz, "--save-predictions", out / "p.csv"],
            ("cannot load the ONNX model",), inputs, out)


def allocating_model(path, op: str):
    """A model that asks onnxruntime for 16 TB (4e12 floats) when it runs."""
    from onnx import TensorProto, helper, numpy_helper

    shape = [numpy_helper.from_array(np.array([4 * 10**12]), "shape")]
    if op == "ConstantOfShape":
        one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
        nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"], value=one)]
    else:
        nodes = [helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0), helper.make_node("Expand", ["m", "shape"], ["big"])]
    return onnx_graph_model(path, [*nodes, helper.make_node("ReduceSum", ["big"], ["y"], keepdims=0)], "y", shape)


@pytest.mark.parametrize("op", ["ConstantOfShape", "Expand"])
def test_onnx_huge_allocation_fails_in_one_line(op, work, capfd):
    """capfd: onnxruntime logs to the process's stderr, past sys.stderr."""
    inputs, out, npz = work
    model = allocating_model(inputs / "m.onnx", op)
    refused(capfd, ["evaluate", "--model", model, "--data", npz], (str(model), "Failed to allocate memory"), inputs, out)


TEN_MB = "x" * 10_000_000
QUOTED = {
    "mean": (lambda path: onnx_file(path, np.zeros((40 * 168, 37)), meta={"mean": TEN_MB, "std": 1}),
             "bad digitsum.json"),
    "decode": (lambda path: onnx_file(path, np.zeros((40 * 168, 37)), meta={"mean": 0, "std": 1, "decode": TEN_MB}),
               "is not sum_of_digits"),
    "name of a sparse initializer outside the file": (lambda path: sparse_initializer_model(path, TEN_MB),
                                                      "stored outside the file"),
}  # fmt: skip


def sparse_initializer_model(path, name: str):
    """A model whose sparse initializer `name` lies outside the file."""
    from onnx import TensorProto, helper, numpy_helper

    sparse = helper.make_sparse_tensor(outside(name, "secret.bin"), numpy_helper.from_array(np.arange(6), "i"), [6])
    return onnx_graph_model(path, [helper.make_node("Cast", [name], ["y"], to=TensorProto.FLOAT)], "y", sparse=[sparse])


@pytest.mark.parametrize("case", list(QUOTED))
def test_onnx_errors_quote_no_ten_megabytes(case, work, capsys):
    inputs, out, npz = work
    build, words = QUOTED[case]
    model = build(inputs / "m.onnx")
    err = refused(capsys, ["evaluate", "--model", model, "--data", npz], (str(model), words), inputs, out)
    assert len(err) < 1000


def endless_loop_model(path):
    """A valid graph that never ends: Loop with no trip count and a condition that stays true."""
    from onnx import TensorProto, helper, numpy_helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["c_out"]), helper.make_node("Identity", ["v"], ["v_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("c", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])  # fmt: skip
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Loop", ["", "yes", "m"], ["y"], body=body)]
    return onnx_graph_model(path, nodes, "y", [numpy_helper.from_array(np.array(True), "yes")])


def test_onnx_endless_loop_stops_at_max_seconds(work, capsys):
    import time

    inputs, out, npz = work
    model = endless_loop_model(inputs / "m.onnx")
    start = time.monotonic()
    refused(capsys, ["evaluate", "--model", model, "--data", npz, "--save-predictions", out / "p.csv", "--max-seconds", "0.5"],
            (str(model), "0.5 s", "--max-seconds"), inputs, out)
    assert time.monotonic() - start < 30


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "1e300"])
def test_max_seconds_must_be_a_positive_time(value, work, capsys):
    inputs, out, npz = work
    model = onnx_file(inputs / "m.onnx", np.zeros((40 * 168, 37)))
    refused(capsys, ["evaluate", "--model", model, "--data", npz, "--max-seconds", value], ("--max-seconds",), inputs, out)


# ------------------------------------------------------------------------ round two: files and folders under a results folder (symlinks, perf.csv, exit codes)

import errno  # noqa: E402 - this block's own imports
import socket  # noqa: E402

from digitsum_bench.engine import perf, runner  # noqa: E402
from digitsum_bench.store import RunKey  # noqa: E402

H200 = "NVIDIA H200"


def bytes_under(folder) -> dict:
    """Every file under `folder` with its bytes: what a command must leave exactly as it was."""
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def gpu_record(results, seed: int, **changes):
    """A GPU record of r003_convnet4 (full budget) trained by the graph engine; `changes` are set in it after."""
    record = {**make_record("r003_convnet4", seed, device=H200, images_per_s=5000.0), "engine": "graph"}
    record.update(changes)
    return write_record(results, record)


def instant_fit(recipe, model, *args, **kwargs):
    """`train.fit` without the training: the model as built, with a one-epoch summary."""
    history = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "val_exact": 0.0, "val_within_one": 0.0,
                "lr": 0.001, "seconds": 0.0}]
    return model, {"history": history, "selected_epoch": 1, "train_seconds": 0.0, "images_per_s": 1000.0,
                   "legs": []}


TINY_RUN = ["run", "--recipe", "tiny_test", "--budget", "smoke", "--device", "cpu", "--no-report"]


@pytest.mark.parametrize("linked", ["checkpoint folder", "records subfolder"])
def test_symlinks_lead_no_write_or_delete_out_of_a_results_folder(linked, tiny_recipe, tmp_path, monkeypatch, capsys):
    """perf.csv, leaderboard.csv, plots/ and a run's folder linked out of the results folder: `run --force`, `perf`
    and `report` refuse in one line or replace the link itself, and every file outside stays as it was."""
    monkeypatch.setattr(runner, "fit", instant_fit)
    results, elsewhere = tmp_path / "results", tmp_path / "elsewhere"
    for name in ("ckpt", "records", "plots"):
        (elsewhere / name).mkdir(parents=True)
        (elsewhere / name / "keep.pt").write_bytes(b"someone else's " + name.encode())
    (elsewhere / "perf.csv").write_text(",".join(perf.COLUMNS) + "\n")
    (elsewhere / "leaderboard.csv").write_text("someone else's leaderboard\n")
    before = bytes_under(elsewhere)
    gpu_record(results, 0)
    key = RunKey("tiny_test", 0, "smoke", data.dataset_id("synth"))
    if linked == "checkpoint folder":
        key.checkpoint_dir(results).parent.mkdir(parents=True)
        key.checkpoint_dir(results).symlink_to(elsewhere / "ckpt")
    else:
        (results / "records" / "smoke").symlink_to(elsewhere / "records")
    for name in ("perf.csv", "leaderboard.csv", "plots"):
        (results / name).symlink_to(elsewhere / name)

    assert main([*TINY_RUN, "--force", "--results", str(results)]) == 2
    captured = capsys.readouterr()
    assert "a symlink leads out of" in captured.out and "Traceback" not in captured.err
    assert main(["perf", "--results", str(results)]) == 0
    assert not (results / "perf.csv").is_symlink() and "r003_convnet4" in (results / "perf.csv").read_text()
    refused(capsys, ["report", "--results", results], ("plots: a symlink leads out of",), results)
    (results / "plots").unlink()
    assert main(["report", "--results", str(results)]) == 0
    assert not (results / "leaderboard.csv").is_symlink()
    assert bytes_under(elsewhere) == before


@pytest.mark.parametrize("target", ["dangling", "a file elsewhere"])
def test_perf_replaces_a_linked_perf_csv_and_writes_nothing_through_it(target, tmp_path, capsys):
    results, elsewhere = tmp_path / "results", tmp_path / "elsewhere"
    elsewhere.mkdir()
    if target == "a file elsewhere":
        (elsewhere / "perf.csv").write_text(",".join(perf.COLUMNS) + "\n")
    before = bytes_under(elsewhere)
    gpu_record(results, 0)
    (results / "perf.csv").symlink_to(elsewhere / "perf.csv")
    assert main(["perf", "--results", str(results)]) == 0
    assert bytes_under(elsewhere) == before
    assert not (results / "perf.csv").is_symlink() and len(perf.read_perf(results / "perf.csv")) == 1


def test_perf_on_a_full_disk_keeps_every_row(tmp_path, capsys, monkeypatch):
    import csv

    rows = [{"device": H200, "torch": "2.14.1", "commit": "abc", "engine": "graph", "recipe": f"r{i}", "batch": 32,
             "runs": 1, "images_per_s": 1000.0 + i, "source": "benchmark", "measured": "2026-12-03"} for i in range(5)]
    perf.write_perf(tmp_path / "perf.csv", rows)
    gpu_record(tmp_path, 0)

    def disk_full(self, rows):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerows", disk_full)
    refused(capsys, ["perf", "--results", tmp_path], ("perf.csv: cannot write (No space left on device)",), tmp_path)
    monkeypatch.undo()
    assert len(perf.read_perf(tmp_path / "perf.csv")) == 5


PERF_CSVS = {
    "a folder": None,
    "/dev/zero": None,
    "a FIFO": None,
    "not UTF-8": b"device,torch,commit,engine,recipe,batch,runs,images_per_s,source,measured\n\xff\xfe,2,c,graph,x,32,1,9,s,m\n",
    "no engine column": "device,torch,commit,recipe,batch,runs,images_per_s,source,measured\n"
                        "NVIDIA H200,2.14.1,abc,r003_convnet4,32,1,1000,benchmark,2026-12-03\n",
    "a 200 kB field": "device,torch,commit,engine,recipe,batch,runs,images_per_s,source,measured\n"
                      f"{'x' * 200_000},2.14.1,abc,graph,r003_convnet4,32,1,1000,benchmark,2026-12-03\n",
    "images_per_s 0": "device,torch,commit,engine,recipe,batch,runs,images_per_s,source,measured\n"
                      "NVIDIA H200,2.14.1,abc,graph,r003_convnet4,32,1,0,benchmark,2026-12-03\n",
}  # fmt: skip


@pytest.mark.parametrize("case", list(PERF_CSVS))
def test_hostile_perf_csv_is_one_line_for_perf_and_the_gpu_plan(case, tmp_path, capsys):
    path = tmp_path / "perf.csv"
    content = PERF_CSVS[case]
    if case == "a folder":
        path.mkdir()
    elif case == "/dev/zero":
        path.symlink_to("/dev/zero")
    elif case == "a FIFO":
        os.mkfifo(path)  # opened for reading, it waits for a writer for ever
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    refused(capsys, ["perf", "--results", tmp_path], (str(path),), tmp_path)
    refused(capsys, ["run", "--recipe", "r003_convnet4", "--budget", "full", "--device", "cuda", "--plan",
                     "--results", tmp_path], (str(path),), tmp_path)


GPU_RECORDS = {
    "versions without torch": lambda r: r["versions"].pop("torch"),
    "config without batch_size": lambda r: r["config"].pop("batch_size"),
    "stacked_seeds a number": lambda r: r.update(stacked_seeds=3),
    "engine a list": lambda r: r.update(engine=["graph"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(GPU_RECORDS))
def test_perf_skips_a_malformed_gpu_record_with_one_warning(case, tmp_path, capsys):
    gpu_record(tmp_path, 0)
    bad = gpu_record(tmp_path, 1)
    record = json.loads(bad.read_text())
    GPU_RECORDS[case](record)
    bad.write_text(json.dumps(record))
    with stderr_warnings():
        assert main(["perf", "--results", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"warning: skipped {bad}: ") and err.count("\n") == 1, err
    assert [r["source"] for r in perf.read_perf(tmp_path / "perf.csv")] == [
        f"record {bad.relative_to(tmp_path).parent.as_posix()}/seed0.json"]


def test_run_past_a_failure_marker_that_is_a_folder_succeeds(tiny_recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "fit", instant_fit)
    key = RunKey("tiny_test", 0, "smoke", data.dataset_id("synth"))
    key.failed_path(tmp_path).mkdir(parents=True)
    with stderr_warnings():
        assert main([*TINY_RUN, "--results", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {key.failed_path(tmp_path)}: cannot delete") and err.count("\n") == 1, err
    assert key.record_path(tmp_path).is_file()


def test_run_that_runs_nothing_asked_for_exits_non_zero(tmp_path, capsys, monkeypatch):
    """`run --recipe NAME --cpu-limit N` leaving NAME out ran nothing: not a success; a finished run counts as done."""
    synth = data.dataset_id("synth")
    monkeypatch.setattr(plan, "estimate_seconds", lambda *a, **k: 10**6)
    monkeypatch.setattr(launch, "_inline", lambda *a: pytest.fail("nothing is to run"))
    argv = ["run", "--recipe", "r003_convnet4", "--budget", "quick", "--device", "cpu", "--cpu-limit", "1",
            "--results", tmp_path, "--no-report"]
    refused(capsys, argv, ("nothing run", "--cpu-limit"))
    write_record(tmp_path, make_record("r003_convnet4", 0, budget="quick", dataset_id=synth, code_version=__version__))
    assert main([str(a) for a in [*argv, "--seeds", "0", "1"]]) == 0


def test_time_box_that_fits_no_run_exits_non_zero(tmp_path, capsys, monkeypatch):
    synth = data.dataset_id("synth")
    monkeypatch.setattr(plan, "estimate_seconds", lambda *a, **k: 3600.0)
    monkeypatch.setattr(runner, "run_one", lambda *a: pytest.fail("no run fits"))
    argv = ["run", "--recipe", "r003_convnet4", "--budget", "smoke", "--device", "cpu", "--time-limit", "1m",
            "--results", tmp_path, "--no-report"]
    refused(capsys, argv, ("nothing run", "time limit"))
    write_record(tmp_path, make_record("r003_convnet4", 0, budget="smoke", dataset_id=synth, code_version=__version__))
    assert main([str(a) for a in [*argv, "--seeds", "0", "1"]]) == 0


# ------------------------------------------------------------------------ round two: records' strings in the report, README and terminal; records report crashed on

import csv  # noqa: E402 - this block's own imports
import shutil  # noqa: E402

from record_factory import DATASET_ID  # noqa: E402

from digitsum_bench.reporting import report  # noqa: E402

# Markers, a heading, a javascript: link, HTML, a table cell, a code span, ANSI escapes, a spreadsheet formula, mathtext
HOSTILE = ('=HYPERLINK("http://evil.example") <!-- /report:quick --> <!-- report:quick -->\n\n# Injected heading\n'
           "[click](javascript:alert(1)) <script>alert(1)</script> <img src=x onerror=alert(1)> | cell | `tick` \\ "
           "\x1b[31mred\x1b[0m\x07 $x^{$ \\S13notacommand{")


def hostile_strings(record: dict) -> dict:
    """`record` with every free-text string in it HOSTILE (its names, times and version stay valid: it is shown)."""
    for key in ("report", "method", "dataset", "git_commit", "device", "pretrained"):
        record[key] = HOSTILE
    record["versions"] = {lib: HOSTILE for lib in record["versions"]}
    record["config"]["assumptions"] = [HOSTILE]
    record["claimed"] = [{"metric": "exact", "value": None, "split": "val", "note": HOSTILE},
                         {"metric": "mae", "value": 1.0, "split": "val", "note": HOSTILE}]
    return record | {"engine": HOSTILE}


@pytest.fixture
def readme_results(tmp_path, monkeypatch):
    """A results folder of ordinary records beside a copy of the README and docs/, which `report` into it rewrites."""
    readme, results = tmp_path / "README.md", tmp_path / "results"
    readme.write_bytes(report.REPO_README.read_bytes())
    shutil.copytree(report.REPO_README.parent / "docs", tmp_path / "docs")
    monkeypatch.setattr(report, "REPO_README", readme)
    for seed in (0, 1):
        write_record(results, make_record("r003_convnet4", seed, val=0.4 + seed / 10, test=0.3 + seed / 10))
        write_record(results, make_record("ours_digitsum", seed, budget="quick", test=0.8 + seed / 10))
    return results


def table_cells(line: str) -> int:
    """The cells of a markdown table row: its pipes that no backslash escapes, less one."""
    pipes, escaped = 0, False
    for char in line:
        pipes += char == "|" and not escaped
        escaped = char == "\\" and not escaped
    return pipes - 1


def test_readme_survives_any_record(readme_results, capsys):
    """A record copied in with markers, a heading, links and HTML in every string: `report` shows them as text in
    the README and docs/, and once the record is gone they are what they were, byte for byte."""
    docs = report.doc_files()  # the copies beside readme_results: README.md and docs/*.md with markers
    assert main(["report", "--results", str(readme_results)]) == 0
    clean = {doc: doc.read_bytes() for doc in docs}
    shown = [write_record(readme_results, hostile_strings(make_record("r002_attention_cnn", 0, budget=budget)))
             for budget in ("full", "quick")]  # fmt: skip
    named = hostile_strings(make_record("r002_attention_cnn", 1)) | {"recipe": HOSTILE, "budget": HOSTILE,
                                                                    "dataset_id": HOSTILE}  # fmt: skip
    refused = write_record(readme_results, make_record("r002_attention_cnn", 1), name="seed1.json")
    refused.write_text(json.dumps(named))
    with stderr_warnings():
        assert main(["report", "--results", str(readme_results)]) == 0
    assert f"skipped {refused}: corrupt record (recipe is str " in capsys.readouterr().err
    text = "".join(doc.read_text(encoding="utf-8") for doc in docs)
    assert text.count("<!--") == b"".join(clean.values()).decode().count("<!--")
    assert text.count("<!-- /report:quick -->") == text.count("<!-- report:quick -->") == 1
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "\\[click\\](javascript:alert(1))" in text  # as text
    for raw in ("<script", "<img", "[click](", "\n# Injected", "\x1b", "\x07"):
        assert raw not in text
    for path in [*shown, refused]:
        path.unlink()
    assert main(["report", "--results", str(readme_results)]) == 0
    assert {doc: doc.read_bytes() for doc in docs} == clean


def test_record_strings_are_text_in_the_leaderboard_and_csv(readme_results):
    write_record(readme_results, hostile_strings(make_record("r002_attention_cnn", 0, budget="quick")))
    assert main(["report", "--results", str(readme_results)]) == 0
    board = (readme_results / "leaderboard.md").read_text(encoding="utf-8")
    for raw in ("<!--", "<script", "<img", "[click](", "\n# Injected", "\x1b", "\x07"):
        assert raw not in board
    table = board.split("## budget `quick`")[1].split("\n\n")[1].splitlines()
    row = next(line for line in table if "r002_attention_cnn" in line)
    assert table_cells(row) == table_cells(table[0])  # the record's pipes and newlines made no cell of their own
    assert "&lt;img src=x onerror=alert(1)&gt; \\| cell \\| \\`tick\\` \\\\" in row
    with open(readme_results / "leaderboard.csv", newline="") as f:
        cells = [cell for line in csv.reader(f) for cell in line]
    assert "'" + HOSTILE in cells  # the device, quoted: a spreadsheet shows it and runs nothing
    assert not [cell for cell in cells if cell.startswith(("=", "+", "@"))]


@pytest.mark.parametrize("field", ["recipe", "budget", "dataset_id"])
@pytest.mark.parametrize("name", ["r003<!--x-->", "quick\n# heading", "a|b", "`x`", "$x^{$", "..", "x" * 101])
def test_record_names_keep_to_their_alphabet(field, name, tmp_path):
    good_record(tmp_path)
    path = write_record(tmp_path, make_record("r003_convnet4", 1, budget="smoke"))
    path.write_text(json.dumps(make_record("r003_convnet4", 1, budget="smoke") | {field: name}))
    with pytest.warns(UserWarning, match=rf"skipped .*seed1\.json: corrupt record \({field} is str "):
        assert len(load_records(tmp_path)) == 1


def test_terminal_shows_no_control_characters_from_files(tmp_path, capsys, monkeypatch):
    """A failure marker's error, a record's value and a folder's name from elsewhere reach `status`, warnings and
    errors as text: no escape sequence to clear the screen, retitle the window or ring the bell."""
    synth = data.dataset_id("synth")
    good_record(tmp_path)
    folder = tmp_path / "records" / "smoke" / synth / "r003_convnet4"
    (folder / "seed1.failed.json").write_text(json.dumps({"error": "RuntimeError: \x1b]0;owned\x07\x1b[2J"}))
    bad = write_record(tmp_path, make_record("r003_convnet4", 2, budget="smoke", dataset_id=synth) | {"seed": "\x1b[2J"},
                       name="seed2.json")  # fmt: skip
    elsewhere = write_record(tmp_path, make_record("r003_convnet4", 3, budget="smoke", dataset_id="evil\x1b[2J"))
    elsewhere.write_text("[")
    assert main(["status", "--results", str(tmp_path), "--budget", "smoke", "--recipe", "r003_convnet4",
                 "--seeds", "0", "1", "2"]) == 0
    out = capsys.readouterr().out
    assert "RuntimeError:  ]0;owned" in out and "corrupt record (seed is str '\\x1b[2J'" in out
    with stderr_warnings():
        assert main(["report", "--results", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert f"skipped {str(elsewhere).replace(chr(27), ' ')}: corrupt record (bad JSON" in err
    assert main(["run", "--recipe", "r003_convnet4", "--seeds", "2", "--budget", "smoke", "--results", str(tmp_path),
                 "--no-report"]) == 2
    err += capsys.readouterr().err
    assert f"error: {bad}: corrupt record (seed is str" in err
    assert not {"\x1b", "\x07"} & set(out + err)


def test_report_draws_dollar_signs_as_text(tmp_path):
    """A course folder named 'course_$5_to_$' is in the dataset's name of its records: plots show it, not mathtext."""
    for seed in (0, 1):
        write_record(tmp_path, make_record("r003_convnet4", seed, dataset="course files /data/course_$5_to_$, 80/20 "
                                           "split seed 0 \\S13notacommand{", report="$x^{$"))  # fmt: skip
    assert main(["report", "--results", str(tmp_path)]) == 0
    assert list((tmp_path / "plots").glob("accuracy_vs_gflops_*.png"))


def test_report_draws_a_history_with_an_epoch_not_scored(tmp_path):
    record = make_record("r003_convnet4", 0)
    record["history"][0]["val_exact"] = None  # valid: a pre-training stage's epochs have none
    write_record(tmp_path, record)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["report", "--results", str(tmp_path)]) == 0
    assert not [w for w in caught if "skipped" in str(w.message)]  # the record is valid: shown, not skipped
    assert list((tmp_path / "plots").glob("training_curves_*.png"))


RECORD_CRASHES = {  # records the old checks let through and `report` then crashed on
    "claim on split train": ("r003_convnet4", "full", lambda r: r.update(claimed=[{"metric": "exact", "value": 0.9,
                                                                                   "split": "train"}])),
    "config.members a string": ("r002_attention_cnn", "quick", lambda r: r["config"].update(members="5")),
    "members strings": ("ours_digitsum", "full", lambda r: r.update(members=["seed 0", "seed 1"])),
}  # fmt: skip


@pytest.mark.parametrize("case", list(RECORD_CRASHES))
def test_record_that_crashed_report_is_skipped_with_one_warning(case, readme_results, capsys):
    recipe, budget, change = RECORD_CRASHES[case]
    record = make_record(recipe, 2, budget=budget)
    change(record)
    path = write_record(readme_results, record)
    with stderr_warnings():
        assert main(["report", "--results", str(readme_results)]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: ") == 1 and f"warning: skipped {path}: corrupt record (" in err


@pytest.mark.parametrize("device", [3, ["cpu"]])
def test_estimate_note_of_a_device_not_a_string_is_ignored(device, readme_results):
    notes = readme_results / "estimates" / "full" / DATASET_ID
    notes.mkdir(parents=True)
    (notes / "r002_attention_cnn.json").write_text(json.dumps(
        {"recipe": "r002_attention_cnn", "budget": "full", "dataset_id": DATASET_ID, "device": device,
         "estimated_seconds": 100}))  # fmt: skip
    assert main(["report", "--results", str(readme_results)]) == 0
    assert "from a few timed steps" not in (readme_results / "leaderboard.csv").read_text()


def test_status_with_a_seed_file_named_seed_squared(tmp_path, capsys):
    good_record(tmp_path)
    folder = tmp_path / "records" / "smoke" / data.dataset_id("synth") / "r003_convnet4"
    (folder / "seed².json").write_bytes((folder / "seed0.json").read_bytes())
    assert main(["status", "--results", str(tmp_path), "--budget", "smoke", "--recipe", "r003_convnet4"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 finished"


def test_readme_rewrite_never_adds_or_removes_a_marker(readme_results, monkeypatch, capsys):
    """Should a section ever write a marker, `report` fails and writes nothing: a marker too many would take the
    README's text after it into the section for good."""
    before = {doc: doc.read_bytes() for doc in report.doc_files()}
    monkeypatch.setitem(report.README_SECTIONS, "quick", lambda records, board: "<!-- /report:quick -->\n# injected")
    assert main(["report", "--results", str(readme_results)]) == 2
    assert "add or remove a `<!-- report:... -->` marker" in capsys.readouterr().err
    assert {doc: doc.read_bytes() for doc in before} == before and not (readme_results / "leaderboard.md").exists()
