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

from digitsum_bench import __version__, data, launch, recipes, submit
from digitsum_bench.cli import main
from digitsum_bench.leaderboard import load_records

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
    "no newline, too large": ("0" * (submit.CSV_HEADER_BYTES + 6 * submit.CSV_ROW_BYTES + 1), ("too large",)),
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
    board = (tmp_path / "leaderboard.csv").read_text().splitlines()
    assert len(board) == 2 and "r003_convnet4" in board[1]  # the good record alone


def test_run_with_nothing_to_do_past_a_corrupt_record(tmp_path, capsys, monkeypatch):
    """One bad record copied in does not break every later `run` into the folder."""
    synth = data.dataset_id("synth")
    write_record(tmp_path, make_record("r003_convnet4", 0, budget="smoke", dataset_id=synth, code_version=__version__))
    bad = write_record(tmp_path, make_record("r003_convnet4", 1, budget="smoke", dataset_id=synth), name="seed1.json")
    bad.write_text("[" * 100_000)
    monkeypatch.setattr(launch, "load_data", lambda *a: type("Splits", (), {"dataset_id": synth})())
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
    path.write_text("from dataclasses import replace\nfrom digitsum_bench.recipes import get_recipe, register\n" + body)
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
    monkeypatch.setattr(launch, "pending", lambda names, seeds, *a: [(n, s) for n in names for s in seeds])
    monkeypatch.setattr(launch, "run_seconds", lambda *a: 10**6)  # far over any limit
    monkeypatch.setattr(launch, "write_estimate", lambda *a: None)
    monkeypatch.setattr(launch, "load_data", lambda *a: type("Splits", (), {"dataset_id": "synth-x"})())
    monkeypatch.setattr(launch, "_inline", lambda todo, job, dataset_id: started.extend(todo) or 0)
    argv = ["run", "--budget", "quick", "--device", "cpu", "--results", str(tmp_path), "--no-report"]
    assert main([*argv, "--recipe", "ours_digitsum"]) == 0
    assert started == [("ours_digitsum", 0)]
    started.clear()
    assert main([*argv, "--all"]) == 0
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
