"""The runner and its loop: records, seeds, resume, --force, corrupt records, locks, evaluate, EMA,
augmentation, test-time shifts, labelled synthetic batches, ensembles."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from dataclasses import replace

import pytest
import torch
import torch.nn as nn

from digitsum_bench import data, store
from digitsum_bench.engine import checkpoints, devices, runner, stacked, train
from digitsum_bench.engine.runner import RunOptions
from digitsum_bench.errors import BenchError
from digitsum_bench.registry import budgets
from digitsum_bench.registry.recipes import get_recipe
from digitsum_bench.store import RunKey, run_lock


def _summary(record):
    return {split: {k: m[k] for k in ("exact", "within_one", "mse", "mae")} for split, m in record["metrics"].items()}


def test_record_contents(tiny_recipe, tmp_path):
    rec = runner.run_one("tiny_test", 0, RunOptions(budget="full", results=tmp_path, device="cpu", progress=False))
    path = RunKey("tiny_test", 0, "full", rec["dataset_id"]).record_path(tmp_path)
    assert json.loads(path.read_text()) == rec
    for key in ("git_commit", "device", "versions", "params_m", "gflops", "train_seconds", "images_per_s",
                "started", "finished", "pretrained", "code_version", "dataset"):
        assert key in rec
    assert rec["pretrained"] == "none"
    assert rec["engine"] == "eager"  # a CPU run trains eagerly; the record says which engine trained it
    assert "legs" not in rec  # one process trained it: its provenance is the record's own
    assert rec["config"]["model"] == "TinyNet" and rec["config"]["epochs"] == 3
    assert len(rec["history"]) == 3 and rec["epochs_run"] == 3
    assert rec["metrics"]["test"]["n"] == budgets.BUDGETS["full"].test_size
    assert rec["metrics"]["val"]["n"] == 64
    assert 1 <= rec["selected_epoch"] <= 3
    assert (path.parent.parent.parent.parent.parent / "checkpoints").exists()


def test_same_seed_same_metrics_other_seed_differs(tiny_recipe, tmp_path):
    a = runner.run_one("tiny_test", 0, RunOptions(budget="full", results=tmp_path / "a", device="cpu", progress=False))
    b = runner.run_one("tiny_test", 0, RunOptions(budget="full", results=tmp_path / "b", device="cpu", progress=False))
    c = runner.run_one("tiny_test", 1, RunOptions(budget="full", results=tmp_path / "a", device="cpu", progress=False))
    assert _summary(a) == _summary(b)
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert [h["train_loss"] for h in a["history"]] != [h["train_loss"] for h in c["history"]]


def test_killed_run_resumes_and_matches(tiny_recipe, tmp_path, monkeypatch):
    full = runner.run_one("tiny_test", 0, RunOptions(budget="full", results=tmp_path / "full", device="cpu", progress=False))

    real = train.train_one_epoch

    def dies_in_epoch_2(*args, **kw):
        if kw["epoch"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(train, "train_one_epoch", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        runner.run_one("tiny_test", 0, RunOptions(budget="full", results=tmp_path / "cut", device="cpu", progress=False))
    key = RunKey("tiny_test", 0, "full", full["dataset_id"])
    assert not key.record_path(tmp_path / "cut").exists()  # nothing half-written
    assert not key.lock_path(tmp_path / "cut").exists()  # lock released
    assert (key.checkpoint_dir(tmp_path / "cut") / "last.pt").exists()

    monkeypatch.setattr(train, "train_one_epoch", real)
    resumed = runner.run_one("tiny_test", 0, RunOptions(budget="full", results=tmp_path / "cut", device="cpu", progress=False))
    assert _summary(resumed) == _summary(full)
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in full["history"]]


def test_finished_run_is_not_recomputed_unless_forced(tiny_recipe, tmp_path, monkeypatch):
    first = runner.run_one("tiny_test", 0, RunOptions(budget="full", results=tmp_path, device="cpu", progress=False))
    calls = []
    real = train.fit
    monkeypatch.setattr(runner, "fit", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = runner.run_one("tiny_test", 0, RunOptions(budget="full", results=tmp_path, device="cpu", progress=False))
    assert calls == [] and again == first
    forced = runner.run_one("tiny_test", 0, RunOptions(budget="full", results=tmp_path, device="cpu", force=True, progress=False))
    assert calls == [1]
    assert forced["started"] >= first["started"] and _summary(forced) == _summary(first)


def test_corrupt_record_is_reported_not_skipped(tiny_recipe, tmp_path):
    rec = runner.run_one("tiny_test", 0, RunOptions(budget="smoke", results=tmp_path, device="cpu", progress=False))
    path = RunKey("tiny_test", 0, "smoke", rec["dataset_id"]).record_path(tmp_path)
    path.write_text('{"recipe": "tiny_test", "seed": 0,')  # truncated
    with pytest.raises(BenchError, match=r"seed0\.json: corrupt record"):
        runner.run_one("tiny_test", 0, RunOptions(budget="smoke", results=tmp_path, device="cpu", progress=False))
    assert path.read_text() == '{"recipe": "tiny_test", "seed": 0,'


def test_failure_leaves_marker_and_no_record(variant, tmp_path, monkeypatch):
    name = variant("tiny_broken")

    def explode(*a, **k):
        raise RuntimeError("loss went NaN at step 3\nsecond line names the real problem")

    monkeypatch.setattr(train.losses, "compute_loss", explode)
    with pytest.raises(RuntimeError):
        runner.run_one(name, 0, RunOptions(budget="smoke", results=tmp_path, device="cpu", progress=False))
    failed = list(tmp_path.rglob("seed0.failed.json"))
    assert len(failed) == 1
    assert json.loads(failed[0].read_text())["error"] == "RuntimeError: second line names the real problem"
    assert not list(tmp_path.rglob("seed0.json")) and not list(tmp_path.rglob("*.lock"))


def test_lock_held_by_live_process_skips(tiny_recipe, tmp_path):
    splits = runner.load_data(budgets.apply_budget(tiny_recipe, "smoke"), budgets.BUDGETS["smoke"], "synth")
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


def test_evaluate_checkpoint_on_npz(tiny_recipe, tmp_path):
    from digitsum_bench import data

    rec = runner.run_one("tiny_test", 0, RunOptions(budget="full", results=tmp_path, device="cpu", progress=False))
    ckpt = RunKey("tiny_test", 0, "full", rec["dataset_id"]).checkpoint_dir(tmp_path) / "final.pt"
    test = data.load_synth("synth", "test", budgets.BUDGETS["full"].test_size, 0)
    data.save_npz(test, tmp_path / "test.npz")
    result = runner.evaluate_file(ckpt, tmp_path / "test.npz", "cpu")
    assert result["exact"] == pytest.approx(rec["metrics"]["test"]["exact"])
    assert result["mse"] == pytest.approx(rec["metrics"]["test"]["mse"])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BenchError, match="junk.pt: not a digitsum-bench checkpoint"):
        runner.evaluate_file(tmp_path / "junk.pt", tmp_path / "test.npz", "cpu")


@pytest.mark.parametrize("native", [True, False])
def test_cpu_precision_follows_the_hardware_and_is_recorded(native, monkeypatch):
    """bf16 autocast on a CPU only where it computes bf16 natively; the record's device says which."""
    monkeypatch.delenv(devices.BF16_ENV, raising=False)  # the suite itself may run with DIGITSUM_BF16=0
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    cpu = torch.device("cpu")
    conv = torch.nn.Conv2d(1, 2, 3)
    with devices.autocast(cpu):
        out = conv(torch.zeros(1, 1, 5, 5))
    assert out.dtype == (torch.bfloat16 if native else torch.float32)
    assert runner.provenance(cpu)["device"].endswith(", bf16)") == native


def test_digitsum_bf16_0_forces_float32_on_a_bf16_cpu(monkeypatch):
    """$DIGITSUM_BF16=0 makes a bf16 CPU compute, and record, what a CPU without bf16 does; a typo is a one-line error."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    cpu = torch.device("cpu")
    monkeypatch.setenv(devices.BF16_ENV, "0")
    with devices.autocast(cpu):
        assert torch.nn.Conv2d(1, 2, 3)(torch.zeros(1, 1, 5, 5)).dtype == torch.float32
    assert "bf16" not in runner.provenance(cpu)["device"]
    assert devices.cpu_arithmetic().endswith(", float32")  # what the gate's measurement calls this machine
    monkeypatch.setenv(devices.BF16_ENV, "1")
    assert devices.uses_bf16(cpu)
    assert devices.cpu_arithmetic().endswith(", bf16")
    monkeypatch.setenv(devices.BF16_ENV, "off")
    with pytest.raises(BenchError, match=r"DIGITSUM_BF16='off': use 0 \(float32\) or 1"):
        devices.uses_bf16(cpu)


def test_the_ema_weights_are_what_is_scored(variant, tmp_path):
    """The scored (and saved) model of an EMA recipe is the EMA's, not the raw weights. A retrained model's accuracy
    cannot show this after an annealed schedule (raw and EMA weights score alike there); the gate's re-scoring of
    its committed checkpoint does, and so does this test, in seconds."""
    name = variant("tiny_last", selection="last")
    rec = runner.run_one(name, 0, RunOptions(budget="full", results=tmp_path, device="cpu", progress=False))
    ckpt = RunKey(name, 0, "full", rec["dataset_id"]).checkpoint_dir(tmp_path)
    final, last = checkpoints.load_pt(ckpt / "final.pt")["model"], checkpoints.load_pt(ckpt / "last.pt")
    assert all(torch.equal(v, last["ema"][f"module.{k}"]) for k, v in final.items())
    assert not all(torch.equal(v, last["model"][k]) for k, v in final.items())


def test_training_batches_are_augmented(tiny_recipe):
    """With `augment`, the model trains on random resamples of the images, not on the images. At the ci budget
    turning it off moves test accuracy by less than the gate's noise; the gate's training-loss check catches it,
    and so does this test, in seconds."""
    cpu = torch.device("cpu")
    split = data.random_split(96, cpu)

    def inputs(recipe):
        torch.manual_seed(0)
        model = recipe.model()
        seen = []
        model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
        state = train.TrainState(model, train.make_optimizer(recipe, model, cpu), None, None)
        train.train_one_epoch(state, split=split, recipe=recipe, seed=0, epoch=1, device=cpu)
        return seen

    plain, augmented = inputs(replace(tiny_recipe, augment=False)), inputs(replace(tiny_recipe, augment=True))
    assert len(plain) == len(augmented) == 3  # the same batches, in the same order
    assert all(not torch.allclose(p, a) for p, a in zip(plain, augmented))
    assert sorted(train.to_input(split.images, train.CHANNELS_LAST).flatten(1).sum(1).tolist()) == \
        pytest.approx(sorted(torch.cat(plain).flatten(1).sum(1).tolist()))  # without it: the images themselves


class Capture(nn.Module):
    """Returns zeros and keeps every input it sees."""

    def __init__(self):
        super().__init__()
        self.seen = []
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        self.seen.append(x.clone())
        return torch.zeros(x.shape[0]) + self.w


def test_tta_shifts_fill_with_black_and_never_wrap_around():
    images = torch.zeros(2, data.HEIGHT, data.WIDTH, dtype=torch.uint8)
    images[:, :, -2:] = 255  # ink only in the two right-most columns
    model = Capture()
    train.predict(model, images, replace(get_recipe("ours_digitsum"), tta=True), torch.device("cpu"))
    black = train.black("course")
    assert len(model.seen) == len(train.TTA_SHIFTS) == 2
    for view in model.seen:
        assert torch.allclose(view[..., :2], torch.tensor(black))  # nothing wrapped around to the left edge
    blank = [bool(torch.allclose(v, torch.tensor(black))) for v in model.seen]
    assert sum(blank) == 1  # shifted right by 2, the ink left the canvas and did not come back
    left = [v for v in model.seen if torch.allclose(v[..., -2:], torch.tensor(black)) and v.max() > black]
    assert len(left) == 1 and left[0][..., -4:-2].min() > black  # shifted left by 2: the ink moved, black behind it


def test_aux_images_enter_the_loss(monkeypatch):
    recipe = replace(budgets.apply_budget(get_recipe("ours_digitsum"), "smoke"), aux_size=64, batch_size=8, aux_batch=4)
    split = data.random_split(16, "cpu")
    seen = []
    real = train.to_input
    monkeypatch.setattr(train, "to_input", lambda images, *a: seen.append(len(images)) or real(images, *a))

    def one_epoch(aux):
        torch.manual_seed(0)
        model = recipe.model()
        state = train.TrainState(model, train.make_optimizer(recipe, model, torch.device("cpu")), None, None)
        return train.train_one_epoch(state, split=split, recipe=recipe, seed=0, epoch=1, device=torch.device("cpu"),
                                     aux=aux)

    with_aux = one_epoch(runner.load_aux(recipe, torch.device("cpu")))
    assert seen == [12, 12]  # 8 training images + 4 labelled synthetic ones per step
    seen.clear()
    without = one_epoch(None)
    assert seen == [8, 8] and with_aux != without


class TinyDigits(nn.Module):
    """Four digit slots from a few hundred parameters: a digits4 head for ensemble runs."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(), nn.BatchNorm2d(8),
                                      nn.AdaptiveAvgPool2d((1, 4)), nn.Flatten(1))
        self.classify = nn.Linear(8, 10)

    def forward(self, x):
        return self.classify(self.features(x).view(len(x), 8, 4).transpose(1, 2))


def digit_variant(variant, name: str, members: int) -> str:
    return variant(name, model=TinyDigits, head="digits4", loss="sum_nll", decode="most_likely_sum",
                   members=members, selection="last")


def test_an_ensemble_is_scored_as_the_mean_of_its_members_log_probabilities(variant, tmp_path):
    ensemble, single = digit_variant(variant, "tiny_ensemble", 2), digit_variant(variant, "tiny_single", 1)
    rec = runner.run_one(ensemble, 0, RunOptions(budget="full", results=tmp_path, device="cpu", progress=False))
    one = runner.run_one(single, 0, RunOptions(budget="full", results=tmp_path, device="cpu", progress=False))
    assert [m["seed"] for m in rec["members"]] == [0, runner.member_seed(0, 1)] and runner.member_seed(0, 1) != 0
    member0 = rec["members"][0]["test"]
    assert member0 == {k: one["metrics"]["test"][k] for k in member0}  # member 0 is the run of seed 0
    assert rec["members"][0]["test"] != rec["members"][1]["test"]
    assert rec["gflops"] == pytest.approx(2 * one["gflops"]) and rec["params_m"] == pytest.approx(2 * one["params_m"])

    cpu = torch.device("cpu")
    model, recipe = checkpoints.load_checkpoint(store.RunKey(ensemble, 0, "full", rec["dataset_id"]).checkpoint_dir(tmp_path)
                                          / "final.pt", cpu)
    assert len(model.members) == 2
    x = torch.randn(3, 1, 40, 168)
    model.eval()
    assert torch.allclose(model(x), (model.members[0](x).log_softmax(-1) + model.members[1](x).log_softmax(-1)) / 2)
    test = data.DeviceData.from_numpy(runner.load_data(recipe, budgets.BUDGETS["full"], "synth").test, cpu)
    assert train.evaluate(model, test, recipe, cpu)["exact"] == pytest.approx(rec["metrics"]["test"]["exact"], abs=2e-3)


def test_an_interrupted_ensemble_resumes_at_the_member_it_reached(variant, tmp_path, monkeypatch):
    name = digit_variant(variant, "tiny_ensemble", 2)
    real_fit, real_epoch = runner.fit, train.train_one_epoch
    fit_args, epoch_args = inspect.signature(real_fit), inspect.signature(real_epoch)

    def stop_at_member_1(*a, **k):
        if fit_args.bind(*a, **k).arguments["seed"] != 0:
            raise KeyboardInterrupt
        return real_fit(*a, **k)

    monkeypatch.setattr(runner, "fit", stop_at_member_1)
    with pytest.raises(KeyboardInterrupt):
        runner.run_one(name, 0, RunOptions(budget="full", results=tmp_path, device="cpu", progress=False))
    monkeypatch.setattr(runner, "fit", real_fit)
    trained = []  # (seed, epoch) of every epoch the second attempt trains

    def spy(*a, **k):
        arguments = epoch_args.bind(*a, **k).arguments
        trained.append((arguments["seed"], arguments["epoch"]))
        return real_epoch(*a, **k)

    monkeypatch.setattr(train, "train_one_epoch", spy)
    rec = runner.run_one(name, 0, RunOptions(budget="full", results=tmp_path, device="cpu", progress=False))
    assert trained == [(runner.member_seed(0, 1), epoch) for epoch in (1, 2, 3)]  # member 0 was finished: not retrained
    assert len(rec["members"]) == 2


def test_a_digit_head_records_per_digit_accuracy_and_a_sum_head_does_not(variant, tmp_path):
    """digit_accuracy (metric_table: optional) where a digit head meets synthetic data with digit labels: its most
    likely digits against the data's; a regression head's record has none, as records made before it."""
    name = digit_variant(variant, "tiny_digits", 1)
    options = RunOptions(budget="full", results=tmp_path, device="cpu", progress=False)
    rec = runner.run_one(name, 0, options)
    cpu = torch.device("cpu")
    final = store.RunKey(name, 0, "full", rec["dataset_id"]).checkpoint_dir(tmp_path) / "final.pt"
    model, recipe = checkpoints.load_checkpoint(final, cpu)
    test = data.DeviceData.from_numpy(runner.load_data(recipe, budgets.BUDGETS["full"], "synth").test, cpu)
    right = (train.predict(model, test.images, recipe, cpu).argmax(dim=2) == test.digits).float().mean().item()
    assert rec["metrics"]["test"]["digit_accuracy"] == pytest.approx(right, abs=2e-3)
    assert 0 <= rec["metrics"]["val"]["digit_accuracy"] <= 1
    plain = runner.run_one("tiny_test", 0, options)
    assert not {"digit_accuracy"} & (set(plain["metrics"]["val"]) | set(plain["metrics"]["test"]))


def interrupted(monkeypatch, run, epoch: int, loop=(train, "train_one_epoch")) -> None:
    """`run()` with a Ctrl-C as training epoch `epoch` starts in `loop` (module, name: a seed's epoch, or a
    stack's with `(stacked, "train_stacked_epoch")`); the loop is restored afterwards."""
    module, name = loop
    real = getattr(module, name)

    def dies(*a, **kw):
        if kw["epoch"] == epoch:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(module, name, dies)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(module, name, real)


def test_a_checkpoint_of_an_edited_recipe_is_refused_not_resumed(variant, tmp_path, monkeypatch):
    """Resumed after its recipe changed, a run would train on with the old optimizer and schedule under a record
    showing the new config: refused in one line. A last.pt saved before configs were kept resumes as before."""
    name = variant("tiny_edited")
    options = RunOptions(budget="full", results=tmp_path, device="cpu", progress=False)
    interrupted(monkeypatch, lambda: runner.run_one(name, 0, options), epoch=2)
    variant(name, lr=1e-2, epochs=4)
    with pytest.raises(BenchError, match=rf"seed0/last\.pt: saved under other settings of recipe {name} \(lr, epochs\); "
                                         r"delete it or use --force$"):
        runner.run_one(name, 0, options)
    variant(name, lr=1e-2)  # a changed epoch count would not resume at all: the schedule's steps are saved
    last = next(tmp_path.rglob("last.pt"))
    torch.save({k: v for k, v in checkpoints.load_pt(last).items() if k != "config"}, last)  # as saved before
    assert [h["epoch"] for h in runner.run_one(name, 0, options)["history"]] == [1, 2, 3]


def test_editing_only_a_recipes_words_does_not_block_its_resume(tiny_recipe):
    """Claims, assumptions and the method's name train nothing: a checkpoint resumes under their edits, not under lr's."""
    saved = checkpoints.recipe_config(tiny_recipe)
    words = replace(tiny_recipe, method="renamed", assumptions=("a new note",), claimed=())
    checkpoints.check_config(Path("last.pt"), saved, checkpoints.recipe_config(words))
    with pytest.raises(BenchError, match=r"last\.pt: saved under other settings of recipe tiny_test \(lr\)"):
        checkpoints.check_config(Path("last.pt"), saved, checkpoints.recipe_config(replace(words, lr=0.5)))


def test_a_pretraining_stage_of_an_edited_recipe_is_refused(variant, tiny_recipe, tmp_path):
    """stage1.pt keeps its stage's config: a stage trained under other settings is refused, not reused."""
    stage = replace(tiny_recipe, name="tiny_stage1", model=TinyDigits, head="digits4", loss="sum_nll",
                    decode="most_likely_sum", data_seed=4, epochs=1, train_size=64, val_size=32)
    recipe = replace(stage, name="tiny_pretrained", data_seed=None, pretrain=stage)
    cpu = torch.device("cpu")
    runner.build_model(recipe, 0, cpu, tmp_path, None, False, "eager")
    edited = replace(recipe, pretrain=replace(stage, lr=1e-2))
    with pytest.raises(BenchError, match=r"stage1\.pt: saved under other settings of recipe tiny_stage1 \(lr\); "
                                         r"delete it or use --force$"):
        runner.build_model(edited, 0, cpu, tmp_path, None, False, "eager")
    saved = checkpoints.load_pt(tmp_path / "stage1.pt")
    torch.save({k: v for k, v in saved.items() if k != "config"}, tmp_path / "stage1.pt")  # as saved before
    runner.build_model(edited, 0, cpu, tmp_path, None, False, "eager")


def test_a_stack_of_an_edited_recipe_is_refused(variant, tmp_path, monkeypatch):
    """A stack resumes its seeds' last.pt through `train.resume`, under the same check."""
    name = variant("tiny_stack_edited")
    options = RunOptions(budget="full", results=tmp_path, device="cpu", progress=False)
    interrupted(monkeypatch, lambda: stacked.run_stacked(name, [0, 1], options), epoch=2,
                loop=(stacked, "train_stacked_epoch"))
    variant(name, weight_decay=0.1)
    with pytest.raises(BenchError, match=rf"last\.pt: saved under other settings of recipe {name} \(weight_decay\)"):
        stacked.run_stacked(name, [0, 1], options)


def test_a_forced_run_that_is_interrupted_resumes_without_force(tiny_recipe, tmp_path, monkeypatch):
    """--force deletes the old record and final.pt with the checkpoints as the run starts: the command run again
    without --force resumes the forced run where it stopped (before, it returned the old record)."""
    options = RunOptions(budget="full", results=tmp_path, device="cpu", progress=False)
    first = runner.run_one("tiny_test", 0, options)
    key = RunKey("tiny_test", 0, "full", first["dataset_id"])
    interrupted(monkeypatch, lambda: runner.run_one("tiny_test", 0, replace(options, force=True)), epoch=2)
    assert not key.record_path(tmp_path).exists() and not (key.checkpoint_dir(tmp_path) / "final.pt").exists()
    trained, real = [], train.train_one_epoch
    monkeypatch.setattr(train, "train_one_epoch", lambda *a, **kw: trained.append(kw["epoch"]) or real(*a, **kw))
    again = runner.run_one("tiny_test", 0, options)
    assert trained == [2, 3] and _summary(again) == _summary(first) and again["started"] >= first["started"]


def test_an_interruption_between_last_pt_and_best_pt_scores_the_best_epochs_weights(tiny_recipe, tmp_path,
                                                                                      monkeypatch):
    """A Ctrl-C between end_epoch's two saves: the record's selected epoch and its scored weights stay one epoch's,
    with no trust in a redone epoch reproducing the abandoned one (on a GPU it does not, bit for bit)."""
    scores = iter([1.0, 2.0])  # epochs 1 and 2 of the first attempt improve; nothing later does
    monkeypatch.setattr(train, "_selection_score", lambda recipe, v: next(scores, 0.0))
    weights, real_end = {}, train.end_epoch  # epoch -> the scored weights it ended with

    def keep(state, **kw):
        weights[kw["epoch"]] = {k: v.clone() for k, v in state.scored.state_dict().items()}
        return real_end(state, **kw)

    monkeypatch.setattr(train, "end_epoch", keep)
    saves, real_save = [], train.save_atomic

    def dies_at_the_fourth_save(obj, path, *a):  # epoch 1: best.pt and last.pt; epoch 2: the first of them
        saves.append(path.name)
        if len(saves) == 4:
            raise KeyboardInterrupt
        return real_save(obj, path, *a)

    options = RunOptions(budget="full", results=tmp_path, device="cpu", progress=False)
    monkeypatch.setattr(train, "save_atomic", dies_at_the_fourth_save)
    with pytest.raises(KeyboardInterrupt):
        runner.run_one("tiny_test", 0, options)
    monkeypatch.setattr(train, "save_atomic", real_save)
    rec = runner.run_one("tiny_test", 0, options)
    folder = RunKey("tiny_test", 0, "full", rec["dataset_id"]).checkpoint_dir(tmp_path)
    final = checkpoints.load_pt(folder / "final.pt")["model"]
    assert all(torch.equal(v, weights[rec["selected_epoch"]][k]) for k, v in final.items())
    assert checkpoints.load_pt(folder / "best.pt")["epoch"] == rec["selected_epoch"]


def test_a_run_finished_by_another_process_meanwhile_is_returned_not_retrained(tiny_recipe, tmp_path, monkeypatch):
    options = RunOptions(budget="full", results=tmp_path, device="cpu", progress=False)
    first = runner.run_one("tiny_test", 0, options)
    checks, real = [], store.finished_record

    def not_yet_then_finished(key, results):  # the check before the lock finds nothing: the other process was at it
        checks.append(key)
        return None if len(checks) == 1 else real(key, results)

    monkeypatch.setattr(runner, "finished_record", not_yet_then_finished)
    monkeypatch.setattr(runner, "fit", lambda *a, **k: pytest.fail("retrained a finished run"))
    assert runner.run_one("tiny_test", 0, options) == first


def test_a_run_resumed_elsewhere_records_each_legs_provenance(tiny_recipe, tmp_path, monkeypatch):
    """git_commit, git_dirty and device are the last leg's; "legs" says which process trained which epochs."""
    real = runner.provenance
    options = RunOptions(budget="full", results=tmp_path, device="cpu", progress=False)
    monkeypatch.setattr(runner, "provenance", lambda device: real(device) | {"git_commit": "a" * 40, "git_dirty": False})
    interrupted(monkeypatch, lambda: runner.run_one("tiny_test", 0, options), epoch=3)
    monkeypatch.setattr(runner, "provenance", lambda device: real(device) | {"git_commit": "b" * 40, "git_dirty": True})
    rec = runner.run_one("tiny_test", 0, options)
    assert rec["git_commit"] == "b" * 40 and rec["git_dirty"]
    assert [(x["epoch"], x["git_commit"], x["git_dirty"], x["device"]) for x in rec["legs"]] == \
        [(1, "a" * 40, False, rec["device"]), (3, "b" * 40, True, rec["device"])]
    assert store.read_record(RunKey("tiny_test", 0, "full", rec["dataset_id"]).record_path(tmp_path)) == rec
