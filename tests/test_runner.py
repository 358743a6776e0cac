"""The runner: seeds, resume, --force, corrupt records, locks, evaluate."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from digitsum_bench import train
from digitsum_bench.errors import BenchError
from digitsum_bench.store import RunKey, run_lock


def _summary(record):
    return {split: {k: m[k] for k in ("exact", "within_one", "mse", "mae")} for split, m in record["metrics"].items()}


def test_record_contents(tiny_recipe, tmp_path):
    rec = train.run_one("tiny_test", 0, budget="full", results=tmp_path, device="cpu", progress=False)
    path = RunKey("tiny_test", 0, "full", rec["dataset_id"]).record_path(tmp_path)
    assert json.loads(path.read_text()) == rec
    for key in ("git_commit", "device", "versions", "params_m", "gflops", "train_seconds", "images_per_s",
                "started", "finished", "pretrained", "code_version", "dataset"):
        assert key in rec
    assert rec["pretrained"] == "none"
    assert rec["config"]["model"] == "TinyNet" and rec["config"]["epochs"] == 3
    assert len(rec["history"]) == 3 and rec["epochs_run"] == 3
    assert rec["metrics"]["test"]["n"] == train.BUDGETS["full"].test_size
    assert rec["metrics"]["val"]["n"] == 64
    assert 1 <= rec["selected_epoch"] <= 3
    assert (path.parent.parent.parent.parent.parent / "checkpoints").exists()


def test_same_seed_same_metrics_other_seed_differs(tiny_recipe, tmp_path):
    a = train.run_one("tiny_test", 0, budget="full", results=tmp_path / "a", device="cpu", progress=False)
    b = train.run_one("tiny_test", 0, budget="full", results=tmp_path / "b", device="cpu", progress=False)
    c = train.run_one("tiny_test", 1, budget="full", results=tmp_path / "a", device="cpu", progress=False)
    assert _summary(a) == _summary(b)
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert [h["train_loss"] for h in a["history"]] != [h["train_loss"] for h in c["history"]]


def test_killed_run_resumes_and_matches(tiny_recipe, tmp_path, monkeypatch):
    full = train.run_one("tiny_test", 0, budget="full", results=tmp_path / "full", device="cpu", progress=False)

    real = train.train_one_epoch

    def dies_in_epoch_2(*args, **kw):
        if args[7] == 2:  # epoch
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(train, "train_one_epoch", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train.run_one("tiny_test", 0, budget="full", results=tmp_path / "cut", device="cpu", progress=False)
    key = RunKey("tiny_test", 0, "full", full["dataset_id"])
    assert not key.record_path(tmp_path / "cut").exists()  # nothing half-written
    assert not key.lock_path(tmp_path / "cut").exists()  # lock released
    assert (key.checkpoint_dir(tmp_path / "cut") / "last.pt").exists()

    monkeypatch.setattr(train, "train_one_epoch", real)
    resumed = train.run_one("tiny_test", 0, budget="full", results=tmp_path / "cut", device="cpu", progress=False)
    assert _summary(resumed) == _summary(full)
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in full["history"]]


def test_finished_run_is_not_recomputed_unless_forced(tiny_recipe, tmp_path, monkeypatch):
    first = train.run_one("tiny_test", 0, budget="full", results=tmp_path, device="cpu", progress=False)
    calls = []
    real = train.fit
    monkeypatch.setattr(train, "fit", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = train.run_one("tiny_test", 0, budget="full", results=tmp_path, device="cpu", progress=False)
    assert calls == [] and again == first
    forced = train.run_one("tiny_test", 0, budget="full", results=tmp_path, device="cpu", force=True, progress=False)
    assert calls == [1]
    assert forced["started"] >= first["started"] and _summary(forced) == _summary(first)


def test_corrupt_record_is_reported_not_skipped(tiny_recipe, tmp_path):
    rec = train.run_one("tiny_test", 0, budget="smoke", results=tmp_path, device="cpu", progress=False)
    path = RunKey("tiny_test", 0, "smoke", rec["dataset_id"]).record_path(tmp_path)
    path.write_text('{"recipe": "tiny_test", "seed": 0,')  # truncated
    with pytest.raises(BenchError, match=r"seed0\.json: corrupt record"):
        train.run_one("tiny_test", 0, budget="smoke", results=tmp_path, device="cpu", progress=False)
    assert path.read_text() == '{"recipe": "tiny_test", "seed": 0,'


def test_failure_leaves_marker_and_no_record(variant, tmp_path, monkeypatch):
    name = variant("tiny_broken")

    def explode(*a, **k):
        raise RuntimeError("loss went NaN at step 3\nsecond line names the real problem")

    monkeypatch.setattr(train.losses, "compute_loss", explode)
    with pytest.raises(RuntimeError):
        train.run_one(name, 0, budget="smoke", results=tmp_path, device="cpu", progress=False)
    failed = list(tmp_path.rglob("seed0.failed.json"))
    assert len(failed) == 1
    assert json.loads(failed[0].read_text())["error"] == "RuntimeError: second line names the real problem"
    assert not list(tmp_path.rglob("seed0.json")) and not list(tmp_path.rglob("*.lock"))


def test_lock_held_by_live_process_skips(tiny_recipe, tmp_path):
    splits = train.load_data(train.apply_budget(tiny_recipe, "smoke"), "smoke", "synth")
    key = RunKey("tiny_test", 0, "smoke", splits.dataset_id)
    with run_lock(key, tmp_path) as mine:
        assert mine
        with run_lock(key, tmp_path) as again:
            assert not again  # same live pid holds it
    key.lock_path(tmp_path).write_text(json.dumps({"pid": 2**22 + 12345, "host": __import__("socket").gethostname()}))
    with run_lock(key, tmp_path) as stale:
        assert stale  # a dead process's lock is taken over


def test_lock_from_another_host_is_stale_once_nothing_changes(tiny_recipe, tmp_path):
    import os
    import time

    from digitsum_bench.store import LOCK_STALE_HOURS, lock_owner

    key = RunKey("tiny_test", 0, "smoke", "synth-x")
    lock = key.lock_path(tmp_path)
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": 1, "host": "node-that-was-preempted"}))
    assert lock_owner(key, tmp_path)["host"] == "node-that-was-preempted"  # fresh: still running there
    old = time.time() - LOCK_STALE_HOURS * 3600 - 60
    os.utime(lock, (old, old))
    ckpt = key.checkpoint_dir(tmp_path) / "last.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"epoch 3")
    assert lock_owner(key, tmp_path) is not None  # its checkpoint just changed: alive
    os.utime(ckpt, (old, old))
    assert lock_owner(key, tmp_path) is None  # nothing changed for hours: pre-empted, take it over
    with run_lock(key, tmp_path) as mine:
        assert mine


def test_budgets_cap_the_recipe(tiny_recipe):
    from digitsum_bench.recipes import get_recipe

    r = train.apply_budget(get_recipe("r002_resnet50"), "smoke")
    assert (r.epochs, r.train_size, r.val_size) == (1, 64, 32)
    full = train.apply_budget(get_recipe("r002_resnet50"), "full")
    assert full == get_recipe("r002_resnet50")
    with pytest.raises(BenchError, match="unknown budget"):
        train.apply_budget(tiny_recipe, "huge")


def test_evaluate_checkpoint_on_npz(tiny_recipe, tmp_path):
    from digitsum_bench import data

    rec = train.run_one("tiny_test", 0, budget="full", results=tmp_path, device="cpu", progress=False)
    ckpt = RunKey("tiny_test", 0, "full", rec["dataset_id"]).checkpoint_dir(tmp_path) / "final.pt"
    test = data.load_synth("synth", "test", train.BUDGETS["full"].test_size, 0)
    data.save_npz(test, tmp_path / "test.npz")
    result = train.evaluate_file(ckpt, tmp_path / "test.npz", "cpu")
    assert result["exact"] == pytest.approx(rec["metrics"]["test"]["exact"])
    assert result["mse"] == pytest.approx(rec["metrics"]["test"]["mse"])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BenchError, match="junk.pt: not a digitsum-bench checkpoint"):
        train.evaluate_file(tmp_path / "junk.pt", tmp_path / "test.npz", "cpu")


@pytest.mark.parametrize("native", [True, False])
def test_cpu_precision_follows_the_hardware_and_is_recorded(native, monkeypatch):
    """bf16 autocast on a CPU only where it computes bf16 natively; the record's device says which."""
    monkeypatch.setattr(train.torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    cpu = train.torch.device("cpu")
    conv = train.torch.nn.Conv2d(1, 2, 3)
    with train.autocast(cpu):
        out = conv(train.torch.zeros(1, 1, 5, 5))
    assert out.dtype == (train.torch.bfloat16 if native else train.torch.float32)
    assert train.provenance(cpu)["device"].endswith(", bf16)") == native


def test_the_ema_weights_are_what_is_scored(variant, tmp_path):
    """The scored (and saved) model of an EMA recipe is the EMA's, not the raw weights. A retrained model's accuracy
    cannot show this after an annealed schedule (raw and EMA weights score alike there); the gate's re-scoring of
    its committed checkpoint does, and so does this test, in seconds."""
    name = variant("tiny_last", selection="last")
    rec = train.run_one(name, 0, budget="full", results=tmp_path, device="cpu", progress=False)
    ckpt = RunKey(name, 0, "full", rec["dataset_id"]).checkpoint_dir(tmp_path)
    final, last = train.load_pt(ckpt / "final.pt")["model"], train.load_pt(ckpt / "last.pt")
    assert all(train.torch.equal(v, last["ema"][f"module.{k}"]) for k, v in final.items())
    assert not all(train.torch.equal(v, last["model"][k]) for k, v in final.items())


def test_training_batches_are_augmented(tiny_recipe):
    """With `augment`, the model trains on random resamples of the images, not on the images. At the ci budget
    turning it off moves test accuracy by less than the gate's noise; the gate's training-loss check catches it,
    and so does this test, in seconds."""
    cpu = train.torch.device("cpu")
    split = train.random_split(96, cpu)

    def inputs(recipe):
        train.torch.manual_seed(0)
        model = recipe.model()
        seen = []
        model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
        opt = train.make_optimizer(recipe, model, cpu)
        train.train_one_epoch(model, opt, None, None, split, recipe, 0, 1, cpu)
        return seen

    plain, augmented = inputs(replace(tiny_recipe, augment=False)), inputs(replace(tiny_recipe, augment=True))
    assert len(plain) == len(augmented) == 3  # the same batches, in the same order
    assert all(not train.torch.allclose(p, a) for p, a in zip(plain, augmented))
    assert sorted(train.to_input(split.images, train.CHANNELS_LAST).flatten(1).sum(1).tolist()) == \
        pytest.approx(sorted(train.torch.cat(plain).flatten(1).sum(1).tolist()))  # without it: the images themselves
