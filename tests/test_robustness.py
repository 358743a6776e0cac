"""Hostile inputs to the CLI: one line on stderr and exit 2, never a traceback, nothing lost or miscounted."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from record_factory import make_record, write_record

from digitsum_bench import data, schema, store
from digitsum_bench.cli import main
from digitsum_bench.engine import launch, runner
from digitsum_bench.engine.runner import RunOptions
from digitsum_bench.errors import BenchError
from digitsum_bench.store import RunKey


def one_line_error(capsys, *words) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for word in words:
        assert word in err, err
    return err


def synth_key(name: str, seed: int = 0, budget: str = "smoke") -> RunKey:
    return RunKey(name, seed, budget, data.dataset_id("synth"))


@pytest.mark.parametrize("content,problem", [("5", "not a JSON object"), ("null", "not a JSON object"),
                                             ("[]", "not a JSON object"), (None, "metrics is int")])
def test_record_not_an_object_or_bad_metrics_report_status_and_run(tmp_path, capsys, content, problem):
    """One malformed record: `report` skips it with a warning naming it, `status` lists it as corrupt, `run` stops
    rather than overwrite it."""
    path = write_record(tmp_path, make_record("r003_convnet4", 0, budget="smoke", dataset_id=data.dataset_id("synth"),
                                              **({"metrics": 5} if content is None else {})))
    write_record(tmp_path, make_record("r003_convnet4", 1, budget="smoke", dataset_id=data.dataset_id("synth")))
    if content is not None:
        path.write_text(content)
    content = path.read_text()
    with pytest.warns(UserWarning, match=rf"skipped .*seed0\.json: corrupt record \({problem}"):
        assert main(["report", "--results", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["status", "--results", str(tmp_path), "--budget", "smoke", "--recipe", "r003_convnet4"]) == 0
    out = capsys.readouterr().out
    assert "corrupt" in out and "seed0.json: corrupt record" in out
    assert main(["run", "--recipe", "r003_convnet4", "--budget", "smoke", "--results", str(tmp_path), "--no-report"]) == 2
    one_line_error(capsys, "seed0.json: corrupt record")
    assert path.read_text() == content  # reported, never overwritten


def test_record_of_another_schema_is_stale_and_redone(tiny_recipe, tmp_path):
    key = synth_key("tiny_test")
    write_record(tmp_path, make_record("tiny_test", 0, budget="smoke", dataset_id=key.dataset_id, schema=2))
    rows = launch.status_rows(tmp_path, ["tiny_test"], [0], "smoke")
    assert [r["state"] for r in rows] == ["stale"] and "schema 2" in rows[0]["detail"]
    assert store.finished_record(key, tmp_path) is None
    record = runner.run_one("tiny_test", 0, RunOptions(budget="smoke", results=tmp_path, device="cpu", progress=False))
    assert record["schema"] == schema.SCHEMA
    assert json.loads(key.record_path(tmp_path).read_text())["schema"] == schema.SCHEMA
    assert [r["state"] for r in launch.status_rows(tmp_path, ["tiny_test"], [0], "smoke")] == ["finished"]


def test_read_only_results_folder_run_with_nothing_to_do(tiny_recipe, tmp_path, monkeypatch, capsys):
    """The tests may run as root, who writes anywhere: a read-only folder is simulated at the temp file."""
    import tempfile

    runner.run_one("tiny_test", 0, RunOptions(budget="smoke", results=tmp_path, device="cpu", progress=False))

    def read_only(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    capsys.readouterr()
    assert main(["run", "--recipe", "tiny_test", "--budget", "smoke", "--results", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "0 run(s) to do, 1 already finished" in captured.out
    assert captured.err.startswith("report skipped: ") and "cannot write (Permission denied)" in captured.err
    assert main(["report", "--results", str(tmp_path)]) == 2
    one_line_error(capsys, "cannot write (Permission denied)")


def test_report_out_pointing_at_a_file(tiny_recipe, tmp_path, capsys):
    write_record(tmp_path, make_record("r003_convnet4", 0))
    (tmp_path / "taken.txt").write_text("mine")
    assert main(["report", "--results", str(tmp_path), "--out", str(tmp_path / "taken.txt")]) == 2
    one_line_error(capsys, "taken.txt: is a file")
    assert (tmp_path / "taken.txt").read_text() == "mine"


def test_npy_header_declaring_a_huge_shape(tmp_path, capsys):
    folder = tmp_path / "course"
    folder.mkdir()
    np.save(folder / "lab0.npy", np.zeros(4, np.uint8))
    header = {"descr": "|u1", "fortran_order": False, "shape": (10**9, 40, 168)}
    with open(folder / "data0.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * 1000)
    assert main(["data", "check", str(folder)]) == 2
    one_line_error(capsys, "data0.npy: header declares shape (1000000000, 40, 168)")


def test_course_folder_with_one_image(tmp_path, capsys):
    folder = tmp_path / "course"
    folder.mkdir()
    np.save(folder / "data0.npy", np.zeros((1, 40, 168), np.uint8))
    np.save(folder / "lab0.npy", np.zeros(1, np.uint8))
    assert main(["run", "--recipe", "r003_convnet4", "--budget", "smoke", "--data", str(folder),
                 "--results", str(tmp_path / "results")]) == 2
    one_line_error(capsys, "1 image(s)", "at least 2")
    assert not (tmp_path / "results" / "records").exists()


@pytest.mark.parametrize("seed", ["-1", str(2**70)])
def test_out_of_range_seeds_are_refused_before_any_work(tmp_path, capsys, seed):
    assert main(["run", "--recipe", "r003_convnet4", "--budget", "smoke", "--seeds", "0", seed,
                 "--results", str(tmp_path)]) == 2
    one_line_error(capsys, f"--seeds {seed}: a seed is a whole number in 0..")
    assert not list(tmp_path.rglob("*.json")) and not list(tmp_path.rglob("*.lock"))
    assert main(["status", "--results", str(tmp_path), "--seeds", seed]) == 2
    one_line_error(capsys, f"--seeds {seed}")


def test_status_data_selects_the_dataset(tmp_path, capsys):
    folder = tmp_path / "course"
    folder.mkdir()
    np.save(folder / "data0.npy", np.zeros((5, 40, 168), np.uint8))
    np.save(folder / "lab0.npy", np.arange(5, dtype=np.uint8))
    course_id = data.dataset_id(str(folder))
    write_record(tmp_path, make_record("r003_convnet4", 0, budget="smoke", dataset_id=course_id))
    write_record(tmp_path, make_record("r003_convnet4", 0, budget="smoke", dataset_id=data.dataset_id("synth")))
    base = ["status", "--results", str(tmp_path), "--budget", "smoke", "--recipe", "r003_convnet4"]
    assert main(base) == 0
    assert "2 finished" in capsys.readouterr().out  # no --data: every dataset found
    assert main([*base, "--data", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "1 finished" in out and out.count("r003_convnet4") == 1
    assert main([*base, "--data", str(tmp_path / "missing")]) == 2
    one_line_error(capsys, "missing")


def test_repeated_flags_add_up(tmp_path, capsys, monkeypatch):
    asked = {}
    monkeypatch.setattr(launch, "launch", lambda names, seeds, *a, **kw: asked.update(names=names, seeds=seeds) or 0)
    assert main(["run", "--recipe", "r003_convnet4", "--recipe", "r002_attention_cnn", "--seeds", "0", "--seeds", "1",
                 "--results", str(tmp_path), "--no-report"]) == 0
    assert asked == {"names": ["r003_convnet4", "r002_attention_cnn"], "seeds": [0, 1]}
    assert main(["run", "--recipe", "r003_convnet4", "--results", str(tmp_path), "--no-report"]) == 0
    assert asked["seeds"] == [0]  # the default when no seed is named
    assert main(["status", "--results", str(tmp_path), "--budget", "smoke", "--recipe", "r003_convnet4",
                 "--recipe", "r002_attention_cnn", "--seeds", "0", "--seeds", "1"]) == 0
    assert "4 missing" in capsys.readouterr().out


def test_recipe_or_seed_named_twice_runs_and_reports_once(tmp_path, capsys, monkeypatch):
    calls = []

    def fake_run_one(name, seed, options, seeds_requested):
        calls.append((name, seed, tuple(seeds_requested)))
        return {"recipe": name, "seed": seed, "budget": "smoke", "train_seconds": 1.0, "device": "cpu",
                "metrics": {"val": {"exact": 0.5, "within_one": 0.5, "mse": 1.0}, "test": None}}

    monkeypatch.setattr(runner, "run_one", fake_run_one)
    assert launch.launch(["r003_convnet4", "r003_convnet4"], [0, 0], RunOptions(budget="smoke", data="synth", results=tmp_path, device="cpu")) == 0
    assert calls == [("r003_convnet4", 0, (0,))]
    assert "1 run(s) to do, 0 already finished" in capsys.readouterr().out
    assert len(launch.status_rows(tmp_path, ["r003_convnet4", "r003_convnet4"], [0, 0], "smoke")) == 1


@pytest.mark.parametrize("force", [False, True])
def test_an_interrupted_run_says_how_to_resume(tmp_path, capsys, monkeypatch, force):
    """A forced run deleted its old record as it started: --force again would start it from scratch."""
    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(launch, "launch", ctrl_c)
    assert main(["run", "--recipe", "r003_convnet4", "--results", str(tmp_path), "--no-report",
                 *(["--force"] if force else [])]) == 130
    again = "run it again without --force" if force else "run the same command again"
    assert capsys.readouterr().err == f"interrupted: finished runs are kept; {again} to resume\n"


def test_a_records_legs_are_optional_and_checked(tmp_path):
    """"legs" (runner: a run resumed under another commit, dirty tree or device) may be absent; present, each
    leg's fields are checked."""
    leg = {"epoch": 3, "git_commit": "b" * 40, "git_dirty": True, "device": "cpu", "part": "member 1"}
    for legs, problem in [(None, ""), ([leg], ""), ([leg | {"git_dirty": "yes"}], "legs[0].git_dirty is str"),
                          ([{k: v for k, v in leg.items() if k != "epoch"}], "missing key legs[0].epoch")]:
        record = make_record() | ({} if legs is None else {"legs": legs})
        text = json.dumps(record).encode()
        if problem:
            with pytest.raises(BenchError, match=re.escape(problem)):
                schema.parse_record(text, tmp_path / "seed0.json")
        else:
            assert schema.parse_record(text, tmp_path / "seed0.json") == record
