"""The leaderboard: run records read back, summarised over seeds, and the cells every view shows.

Owns reading `<results>/records/<budget>/<dataset_id>/<recipe>/seed<seed>.json` into one frame
(`load_records`), the leaderboard frame (`leaderboard`: one row per recipe, budget and dataset, and per
weight status where its seeds differ in it), and the formatters that the markdown (report.py), the web
page (page.py) and the gate share: numbers, durations, the exact-accuracy interval, the test against the
best row, and the one way a report's claim is written. Which metrics the rows summarise and the tables show, with their
headers, comes from the metrics table (metric_table.py). No torch and no plotting here.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from packaging.version import Version
from scipy import stats

from ..claims import CLAIM_NAMES, PERCENT, claim_text, claim_value
from ..errors import BenchError, duration
from ..metric_table import METRIC_TABLE, TableView
from ..schema import N_SUMS, RECORD_KEYS
from ..store import read_record

SPLITS = ("val", "test")
METRICS = TableView(lambda m: m.board)  # summarised over seeds in the leaderboard (metric_table: `board`)
SCALARS = ("n", "loss")  # per split, beside every metric of metric_table (an optional one may be absent: NaN)
NUMBERS = ("params_m", "gflops", "train_seconds", "images_per_s")  # null in JSON -> NaN
RUN = ["recipe", "seed", "budget", "dataset_id", "code_version"]  # a second record of one run is a duplicate
GROUP = ["recipe", "budget", "dataset_id"]  # one leaderboard row (a row per weight status where they differ)
TABLE = ["budget", "dataset_id"]  # one markdown table, one set of plots
ALPHA = 0.05  # Welch test level for "not significantly worse than the best row"
SAME = "≈"  # the mark for such a row
# The measured metrics' columns, in table order, each with its header (exact's cell gives its interval too).
METRIC_COLUMNS = TableView(lambda m: m.board, lambda m: m.header + (" (95% CI)" if m.name == "exact" else ""))
CLAIM_METRICS = TableView(lambda m: m.claimable)  # the metrics a claim can be of, each with `claimed_<name>`


# ----------------------------------------------------------------------------------------
# Reading records
# ----------------------------------------------------------------------------------------


def load_records(results: Path) -> pd.DataFrame:
    """All records under `results/records`, one row each, duplicates of a run removed.

    Scalars become flat columns (`test_exact`, `version_torch`, ...); `*_per_sum` and
    `*_confusion` are numpy arrays; `history`, `claimed` and `config` stay as parsed JSON.
    Lock files and the `*.failed.json` records of failed runs are skipped, and so, with a
    warning naming the file, are records of another schema (`run` redoes them) and records that
    are malformed in any way (records are copied in from other machines: one bad file must not
    hide the rest).
    """
    folder = Path(results) / "records"
    paths = sorted(p for p in folder.rglob("*.json") if not p.name.endswith(".failed.json"))
    rows = []
    for path in paths:
        try:
            rows.append(_read_record(path))
        except BenchError as e:  # OtherSchema too
            warnings.warn(f"skipped {e}", stacklevel=1)  # here: `run` reads the records twice, one warning
    if not rows:
        raise BenchError(f"{folder}: no records in it; make some with "
                         f"`digitsum-bench run --recipe NAME --results {results}`")
    return _drop_duplicates(pd.DataFrame(rows))


def _read_record(path: Path) -> dict:
    """One record file, checked (store.read_record) and flattened; a BenchError names the file otherwise."""
    raw = read_record(path)
    try:
        return {"path": str(path), **_flatten(raw)}
    except (KeyError, AttributeError, TypeError, ValueError, OverflowError) as e:
        raise BenchError(f"{path}: corrupt record ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e


def _flatten(raw: dict) -> dict:
    """The record (already checked by store.read_record) as flat columns; ValueError/TypeError for bad values."""
    row = {k: raw[k] for k in RECORD_KEYS if k not in ("schema", "versions", "metrics")}
    row.update({k: _number(raw[k]) for k in NUMBERS})
    row["seeds_requested"] = tuple(int(s) for s in raw["seeds_requested"])  # hashable and countable
    row["seed"] = int(raw["seed"])
    row["finished"] = _utc(raw["finished"])
    Version(raw["code_version"])  # picking the newest code version needs a parsable one
    row["claimed"] = [{"metric": c["metric"], "value": None if c["value"] is None else float(c["value"]), "split": c["split"], "note": c.get("note", "")}
                      for c in raw["claimed"]]  # fmt: skip
    row.update({f"version_{lib}": v for lib, v in raw["versions"].items()})
    row["members"] = raw.get("members")  # an ensemble's members alone (runner.fit_members); absent otherwise
    row["wall_seconds"] = (row["finished"] - _utc(raw["started"])).total_seconds()  # the run, start to record
    stage = raw["pretrain"]["history"] if "pretrain" in raw else []  # a pre-training stage's epochs, where timed
    row["steady_seconds"] = steady_seconds(raw["history"] + stage, row["train_seconds"])
    row["pretrain_epochs_timed"] = len(stage)
    times = _epoch_seconds(stage)
    row["pretrain_seconds"] = float(np.median(times)) * len(times) if times else 0.0  # its epochs at their median
    for split in SPLITS:
        row.update(_flatten_split(raw["metrics"], split))
    return row


def steady_seconds(history: list[dict], seconds: float) -> float:
    """A record's training `seconds` with every epoch of `history` (its own and a pre-training stage's, where
    the record has them) counted at their median time: what the training takes on its device, whatever paused
    or shared the machine for a few epochs (`train_seconds` keeps the wall time)."""
    epochs = _epoch_seconds(history)
    if not epochs or math.isnan(seconds):
        return seconds
    return seconds * float(np.median(epochs)) / float(np.mean(epochs))


def _epoch_seconds(history: list[dict]) -> list[float]:
    """The seconds of each epoch of `history` that has them."""
    return [float(t) for t in (e.get("seconds") for e in history) if isinstance(t, (int, float)) and t > 0]


def _flatten_split(metrics: dict, split: str) -> dict:
    """`val_exact`, `val_per_sum`, ...; NaN/None for a split the run did not have (test on course data)
    and for an optional metric the record lacks (`mse_raw` in records made before it was measured)."""
    values = metrics.get(split)
    scalars = (*SCALARS, *METRIC_TABLE)
    if values is None:
        return {f"{split}_{k}": math.nan for k in scalars} | {f"{split}_per_sum": None, f"{split}_confusion": None}
    row = {f"{split}_{k}": _number(values.get(k)) for k in scalars}
    row[f"{split}_per_sum"] = _array(values["per_sum"], (N_SUMS,), f"metrics.{split}.per_sum")  # null -> NaN
    row[f"{split}_confusion"] = _array(values["confusion"], (N_SUMS, N_SUMS), f"metrics.{split}.confusion")
    return row


def _utc(text: str) -> pd.Timestamp:
    """A time in UTC, so that records written with and without a time zone sort together."""
    time = pd.Timestamp(text)  # ValueError if it is not a time
    return time.tz_localize("UTC") if time.tzinfo is None else time.tz_convert("UTC")


def _number(value) -> float:
    return math.nan if value is None else float(value)


def _array(value, shape: tuple[int, ...], where: str) -> np.ndarray:
    array = np.asarray(value, dtype=float)
    if array.shape != shape:
        raise ValueError(f"{where} has shape {array.shape}, expected {shape}")
    return array


def _drop_duplicates(records: pd.DataFrame) -> pd.DataFrame:
    """One record per run, the latest `finished`: a file copied in under another name is not counted twice."""
    records = records.sort_values(["finished", "path"], kind="stable")
    for key, group in records[records.duplicated(RUN, keep=False)].groupby(RUN):
        ignored = ", ".join(group["path"].iloc[:-1])
        warnings.warn(f"duplicate records of run {key}: kept {group['path'].iloc[-1]}, ignored {ignored}", stacklevel=3)
    return records.drop_duplicates(RUN, keep="last").reset_index(drop=True)


def current(records: pd.DataFrame) -> pd.DataFrame:
    """Only the records made by the newest code version of each (recipe, budget, dataset)."""
    newest = records.groupby(GROUP)["code_version"].transform(lambda v: str(max(v, key=Version)))
    return records[records["code_version"] == newest]


# A row's weights (a record's `pretrained`), as its recipe cell names them where its recipe has two rows.
WEIGHTS = {"imagenet": "ImageNet weights loaded", "unavailable": "from scratch: ImageNet weights unavailable",
           "none": "from scratch"}  # fmt: skip


def board_runs(records: pd.DataFrame) -> pd.DataFrame:
    """The runs the leaderboard's rows summarise: the newest code version's (`current`), each with its row's
    `weights` (its `pretrained` status where the seeds of one recipe, budget and dataset differ in it, as those
    are two methods with a row each; "" otherwise) and `label` (the recipe, with those weights where they split it)."""
    runs = current(records)
    mixed = runs.groupby(GROUP)["pretrained"].transform("nunique") > 1
    weights = runs["pretrained"].where(mixed, "")
    return runs.assign(weights=weights, label=[row_label(r, w) for r, w in zip(runs["recipe"], weights)])


def row_label(recipe: str, weights: str) -> str:
    """'r003_resnet50_ema (ImageNet weights loaded)' for a row of one weight status of its recipe; else the name."""
    return f"{recipe}{weights_note(weights)}"


def weights_note(weights: str) -> str:
    """' (ImageNet weights loaded)' after a recipe's name in a row of one weight status; '' otherwise."""
    return f" ({WEIGHTS.get(weights, weights)})" if weights else ""


def latest(runs: pd.DataFrame) -> pd.Series:
    """The run that finished last: names, config and claims as the newest run states them."""
    return runs.sort_values("finished").iloc[-1]


# ----------------------------------------------------------------------------------------
# The leaderboard
# ----------------------------------------------------------------------------------------


def leaderboard(records: pd.DataFrame, registry: dict[str, dict] | None = None, notes: list[dict] = ()) -> pd.DataFrame:
    """One row per (recipe, budget, dataset_id): means and sample stds over seeds, cost, claims.

    Uses the newest code version present for each row. A recipe whose seeds differ in the weights they
    loaded has a row per weight status (`weights`, `label`: board_runs). Sorted by test exact accuracy, or val
    where a row has no test split (course data), best first. The `split` column says which.
    `registry` (report.registry_facts) gives each recipe's own epochs, members and training
    size, so that a row knows whether it trained its report's own budget (`own_budget`): only
    such a row stands beside the report's claims. Every recipe of the registry that has no run
    in a `full` table gets a row there too, saying what it would cost (`not_run`), from its records
    on each device or else from the notes of a CPU run that left it out (store.read_estimates).
    """
    registry = registry or {}
    rows = board_runs(records).groupby([*GROUP, "weights"], sort=False)
    board = pd.DataFrame([_summarise(runs, registry.get(name)) for (name, *_), runs in rows])
    board = pd.concat([board, _not_run_rows(board, records, registry, notes)], ignore_index=True)
    score = board["test_exact_mean"].fillna(board["val_exact_mean"])
    board = board.assign(_score=score).sort_values(["_score", "recipe"], ascending=[False, True], kind="stable")
    return board.drop(columns="_score").reset_index(drop=True)


def _summarise(runs: pd.DataFrame, facts: dict | None) -> dict:
    """One leaderboard row from the seeds of one recipe on one budget and dataset."""
    last = latest(runs)
    asked = set().union(*runs["seeds_requested"])
    row = {k: last[k] for k in ("recipe", "weights", "label", "report", "method", "budget", "dataset_id", "dataset")}
    row["device"] = joined(runs["device"].map(device_label))
    row["n_seeds"] = runs["seed"].nunique()
    row["seeds_requested"] = len(asked)
    row["complete"] = asked <= set(runs["seed"])
    for split in SPLITS:
        for metric in METRICS:
            values = runs[f"{split}_{metric}"].replace([math.inf, -math.inf], math.nan)  # inf: a diverged run
            row[f"{split}_{metric}_mean"] = values.mean()
            row[f"{split}_{metric}_std"] = values.std()  # ddof=1 over the finite values; NaN for one
            row[f"{split}_{metric}_seeds"] = int(values.notna().sum())  # the seeds with a finite value: the CI's n
    row.update({k: runs[k].mean() for k in NUMBERS})
    row["steady_seconds"] = runs["steady_seconds"].mean()
    row["train_time"] = "; ".join(f"{duration(group['steady_seconds'].mean())}"
                                  + (f" ({short_device(device)})" if runs["device"].nunique() > 1 else "")
                                  for device, group in runs.groupby("device"))  # fmt: skip
    row["epochs"] = int(runs["epochs_run"].max())
    row["own_epochs"] = facts["epochs"] if facts else (row["epochs"] if last["budget"] == "full" else math.nan)
    row["own_budget"] = bool(last["budget"] == "full" or facts is not None and _trained_as_reported(last, facts))
    row.update(time_to_accuracy(runs["history"], runs["pretrain_seconds"]))
    # a capped run stands beside no claim, in no column: the report's numbers came from its own budget
    row.update(claim_fields(last["claimed"] if row["own_budget"] else []))
    row["not_comparable"] = not_comparable(last["config"], runs["pretrained"]) if row["claims"] else ""
    if row["not_comparable"]:  # the claim's number is of another method: no claimed_* value, no verdict, no plot
        row.update({k: v for k, v in claim_fields([]).items() if k != "claims"},
                   claimed=f"{row['not_comparable']} (the report's claim: {row['claimed']})")
    row["pretrained"] = joined(runs["pretrained"])
    row["code_version"] = last["code_version"]
    row["git_commit"] = joined(runs["git_commit"])
    row["git_dirty"] = bool(runs["git_dirty"].any())
    row["split"] = "test" if runs["test_exact"].notna().any() else "val"  # the split the row is ranked on
    row["not_run"] = row["not_run_short"] = ""
    return row


def _trained_as_reported(run: pd.Series, facts: dict) -> bool:
    """Whether a run trained its recipe's own epochs, members and training images (a budget that capped nothing)."""
    config = run["config"]
    return (int(run["epochs_run"]) == facts["epochs"] and config.get("members", 1) == facts["members"]
            and config.get("train_size") == facts["train_size"])  # fmt: skip


NOT_COMPARABLE = "not comparable: the report started from ImageNet weights, this run from scratch"


def not_comparable(config: dict, statuses: pd.Series) -> str:
    """Why a row's claims are of another method, or "": a recipe whose report started from ImageNet weights
    stands beside its claims only where every seed loaded them (a from-scratch run is not a pretrained one)."""
    asked = config.get("pretrained", "none") if isinstance(config, dict) else "none"
    return NOT_COMPARABLE if asked == "imagenet" and set(statuses) != {"imagenet"} else ""


LEVELS = (0.5, 0.9)  # validation exact accuracies whose first epoch and training time the leaderboard gives


def time_to_accuracy(histories: pd.Series, before: pd.Series | None = None) -> dict:
    """For each of LEVELS: the mean epochs and training seconds until validation exact first reached it,
    over the seeds that reached it (`epochs_to_50`, `seconds_to_50`), and how many did (`reached_50`).
    `before`: each run's seconds spent before its history's first epoch (a pre-training stage)."""
    before = [0.0] * len(histories) if before is None else list(before)
    row = {}
    for level in LEVELS:
        hits = [hit for hit in (first_reached(h, level, t) for h, t in zip(histories, before)) if hit is not None]
        tag = f"{level * 100:.0f}"
        row[f"epochs_to_{tag}"] = float(np.mean([e for e, _ in hits])) if hits else math.nan
        row[f"seconds_to_{tag}"] = float(np.mean([t for _, t in hits])) if hits else math.nan
        row[f"reached_{tag}"] = len(hits)
    return row


def first_reached(history: list[dict], level: float, start: float = 0.0) -> tuple[int, float] | None:
    """(epoch, training seconds up to the end of it, counted from `start`) where validation exact first reached
    `level`; None if never."""
    seconds = start
    for entry in history:
        seconds += entry["seconds"] or 0.0
        if entry["val_exact"] is not None and entry["val_exact"] >= level:
            return int(entry["epoch"]), seconds
    return None


def time_to_cell(row: pd.Series, level: float) -> str:
    """'3 ep · 12 s', with '(2 of 3 seeds)' where some seeds never reached `level`; 'never' where none did."""
    tag = f"{level * 100:.0f}"
    if row["n_seeds"] == 0:
        return "—"
    if row[f"reached_{tag}"] == 0:
        return "never"
    cell = f"{row[f'epochs_to_{tag}']:.3g} ep · {duration(row[f'seconds_to_{tag}'])}"
    return cell + (f" ({row[f'reached_{tag}']} of {row['n_seeds']} seeds)" if row[f"reached_{tag}"] < row["n_seeds"] else "")


def _not_run_rows(board: pd.DataFrame, records: pd.DataFrame, registry: dict[str, dict], notes: list[dict]) -> pd.DataFrame:
    """A row for each registry recipe with no run in a `full` table: its claims and what a seed would cost."""
    rows = []
    full = board[board["budget"] == "full"] if len(board) else board
    devices = sorted(set(records.loc[records["budget"] != "smoke", "device"]))
    for (dataset_id, dataset), table in full.groupby(["dataset_id", "dataset"]):
        for name, facts in registry.items():
            if name in set(table["recipe"]):
                continue
            row = {"recipe": name, "weights": "", "label": name, "report": facts["report"], "method": facts["method"],
                   "budget": "full", "dataset_id": dataset_id, "dataset": dataset, "device": "—", "n_seeds": 0,
                   "seeds_requested": 0, "complete": False, "own_budget": True, "epochs": math.nan,
                   "own_epochs": facts["epochs"], "train_time": "—", "pretrained": "—", "code_version": "",
                   "git_commit": "", "git_dirty": False, "split": table["split"].iloc[0], "not_comparable": ""}  # fmt: skip
            row.update(claim_fields(facts["claimed"]))
            row.update({f"{split}_{metric}_seeds": 0 for split in SPLITS for metric in METRICS})
            row.update(time_to_accuracy(pd.Series([], dtype=object)))
            noted = [n for n in notes if (n["recipe"], n["budget"], n["dataset_id"]) == (name, "full", dataset_id)]
            costs = not_run_costs(records, name, facts, devices, noted)
            row["not_run"], row["not_run_short"] = not_run_text(costs), not_run_short(costs)
            rows.append(row)
    return pd.DataFrame(rows)


def not_run_costs(records: pd.DataFrame, name: str, facts: dict, devices: list[str],
                  notes: list[dict] = ()) -> list[tuple[str, float | None, str]]:
    """What a seed of a recipe not run would cost, per device: (device, seconds or None where not measured, how
    it is known). Measured: the training time per epoch in this recipe's records there (any budget but smoke;
    `steady_seconds` over the epochs timed, a pre-training stage's among them where the record has it), times its
    own epochs (a pre-training stage's counted at the same cost) and members; else a CPU run's note of its
    full-budget estimate ("from a few timed steps")."""
    runs = records[(records["recipe"] == name) & (records["budget"] != "smoke")]
    noted = {n.get("device", "a CPU"): float(n["estimated_seconds"]) for n in notes}
    epochs = facts["epochs"] + facts.get("pretrain_epochs", 0)
    costs = []
    for device in sorted(set(devices) | set(noted)):
        there = runs[runs["device"] == device]
        if not there.empty:
            timed = (there["epochs_run"] + there["pretrain_epochs_timed"]) * there["config"].map(lambda c: c.get("members", 1))
            costs.append((device, (there["steady_seconds"] / timed).mean() * epochs * facts["members"], "measured"))
        elif device in noted:
            costs.append((device, noted[device], "from a few timed steps"))
        else:
            costs.append((device, None, "not measured"))
    return costs


def not_run_text(costs: list[tuple[str, float | None, str]]) -> str:
    """'not run: about 12 min a seed on NVIDIA H200 / about 3.1 h a seed on cpu (...) (from a few timed steps) /
    time not measured on ...': every device's cost, for the CSV and the recipe's detail view."""
    parts = [f"about {duration(t)} a seed on {device_label(d)}" + ("" if how == "measured" else f" ({how})")
             for d, t, how in costs if t is not None]
    unmeasured = [device_label(d) for d, t, _ in costs if t is None]
    if unmeasured:
        parts.append(f"time not measured on {' or '.join(unmeasured)}")
    return "not run: " + (" / ".join(parts) if parts else "time not measured on any device yet")


def not_run_short(costs: list[tuple[str, float | None, str]]) -> str:
    """'not run · ~4.2 h a seed, 1-thread CPU': the cheapest known device only, for a table's cell."""
    known = [(t, d) for d, t, _ in costs if t is not None]
    if not known:
        return "not run · time not measured yet"
    seconds, device = min(known)
    return f"not run · ~{duration(seconds)} a seed, {short_device(device)}"


def device_label(device: str) -> str:
    """A record's device as the board shows it: 'cpu (x86_64, 1 thread, bf16)' (records keep '1 threads')."""
    return re.sub(r"\b1 threads\b", "1 thread", str(device))


def short_device(device: str) -> str:
    """'1-thread CPU', '2-thread CPU', 'NVIDIA H200': a device in a few words."""
    threads = re.match(r"cpu \(.*?(\d+) threads?", str(device))
    if threads:
        return f"{threads.group(1)}-thread CPU"
    return "CPU" if str(device).startswith("cpu") else str(device)


def claim_fields(claimed: list[dict]) -> dict:
    """A row's claim fields: all claims as text ("val exact 94.92%, val MSE raw 0.264"), each
    claimed number (`claimed_exact`, `claimed_mse_raw`, ...; NaN where none), the exact claim's
    split, and the claims themselves (`claims`, for the tables' cells; not written to the CSV)."""
    by_metric = {c["metric"]: c for c in claimed}
    exact = by_metric.get("exact")
    values = {f"claimed_{m}": by_metric[m]["value"] if m in by_metric and by_metric[m]["value"] is not None
              else math.nan for m in CLAIM_METRICS}  # fmt: skip
    return {
        "claimed": ", ".join(claim_text(c) for c in claimed),
        **values,
        "claimed_split": exact["split"] if exact else "",
        "claims": claimed,
    }


def claims_of(claims: list[dict], metric: str, split: str | None = None) -> list[dict]:
    """The claims of `metric` (on `split`, where given), in the report's order."""
    return [c for c in claims if c["metric"] == metric and split in (None, c["split"])]


def claim_cell(row: pd.Series, metric: str, split: str | None = None) -> str:
    """The report's claims of `metric` on `split`, e.g. 'val 94.92%'; '—' where it claims none; why not, where
    the claim is of another method than the row's runs (`not_comparable`)."""
    claims = claims_of(row["claims"], metric, split)
    if claims and row.get("not_comparable"):
        return row["not_comparable"]
    return "; ".join(f"{c['split']}{'' if c['value'] is None else ' '}{claim_value(c)}" for c in claims) or "—"


def metric_columns(table: pd.DataFrame) -> list[tuple[str, str, str | None]]:
    """The metric columns of one table, in order, as (kind, metric, split): each measured metric (METRICS) on
    the split the rows are ranked on (split None), `vs best` after exact, then for each split the
    reports claim it on, the measured metric on that split (unless it is the ranked one) and the
    claims beside it. Only rows that trained their report's own budget hold claims, so a table of
    a capped budget has no claim column."""
    claimed = {(c["metric"], c["split"]) for claims in table["claims"] for c in claims}
    ranked = set(table["split"])
    columns = []
    for metric in METRICS:
        splits = [split for split in SPLITS if (metric, split) in claimed]
        columns.append(("measured", metric, None))
        columns += [("claim", metric, split) for split in splits if ranked == {split}]
        if metric == "exact":
            columns.append(("vs best", metric, None))
        for split in (split for split in splits if ranked != {split}):
            columns += [("measured", metric, split), ("claim", metric, split)]
    return columns


def metric_header(kind: str, metric: str, split: str | None) -> str:
    """A metric column's header: 'exact % (95% CI)', 'val exact % (95% CI)', 'claim: val exact'."""
    if kind == "claim":
        return f"claim: {split} {CLAIM_NAMES[metric]}"
    if kind == "vs best":
        return "vs best"
    return METRIC_COLUMNS[metric] if split is None else f"{split} {METRIC_COLUMNS[metric]}"


# ----------------------------------------------------------------------------------------
# Cells
# ----------------------------------------------------------------------------------------


def score(row: pd.Series, split: str | None = None) -> tuple[float, float, int]:
    """(mean, std, seeds) of the row's exact accuracy on `split` (default: the split it is ranked on)."""
    split = split or row["split"]
    return row[f"{split}_exact_mean"], row[f"{split}_exact_std"], finite_seeds(row, "exact", split)


def finite_seeds(row: pd.Series, metric: str, split: str | None = None) -> int:
    """How many of the row's seeds gave a finite `metric` on `split`: the n of its mean and interval."""
    n = row.get(f"{split or row['split']}_{metric}_seeds", math.nan)
    return 0 if pd.isna(n) else int(n)


def finite_note(row: pd.Series, metric: str, split: str | None = None) -> str:
    """' (2 of 3 seeds: 1 not finite)' where some of the row's seeds gave no finite `metric`; '' otherwise."""
    n, seeds = finite_seeds(row, metric, split), int(row["n_seeds"])
    return f" ({n} of {seeds} seeds: {seeds - n} not finite)" if 0 < n < seeds else ""


def measured(row: pd.Series, metric: str, split: str | None = None) -> float:
    """The row's mean of `metric` over seeds on `split` (default: the split it is ranked on)."""
    return row[f"{split or row['split']}_{metric}_mean"]


def measured_cell(row: pd.Series, metric: str, split: str | None = None, note: bool = True) -> str:
    """The measured `metric` as shown: exact with its interval, within-one in %, errors to 3 decimals, and
    (`note`) how many seeds it is of where some gave no finite value; a row not run says so, in short, in its
    exact cell."""
    if row["not_run"]:
        return row["not_run_short"] if metric == "exact" and split is None else "—"
    if metric == "exact":
        cell = exact_cell(row, split)
    else:
        value = measured(row, metric, split)
        cell = fmt(value * 100, ".1f") if metric in PERCENT else fmt(value, ".3f")
    return cell + (finite_note(row, metric, split) if note else "")


def exact_cell(row: pd.Series, split: str | None = None) -> str:
    """'32.0 ± 5.0': mean exact accuracy ± the half-width of its 95% t-interval over seeds."""
    mean, std, n = score(row, split)
    return f"{fmt(mean * 100, '.1f')} ± {fmt(half_width(std, n) * 100, '.1f', 'n/a')}"


def half_width(std: float, n: int) -> float:
    """The half-width of the 95% t-interval of a mean over `n` seeds with standard deviation `std` (NaN for one)."""
    return stats.t.ppf(0.975, n - 1) * std / math.sqrt(n) if n >= 2 else math.nan


def verdict(row: pd.Series, claim: dict) -> str:
    """Where a claimed number stands against the row's seeds, on the claim's metric and split: inside the
    95% t-interval of their mean, or the mean lower or higher than the claim with the claim outside it."""
    if row.get("not_comparable"):
        return row["not_comparable"]
    if claim["value"] is None:
        return "the report gives no number"
    mean = row[f"{claim['split']}_{claim['metric']}_mean"]
    n = finite_seeds(row, claim["metric"], claim["split"])
    half = half_width(row[f"{claim['split']}_{claim['metric']}_std"], n)
    if math.isnan(half):
        if finite_seeds(row, "exact", claim["split"]) == 0:  # every run scores exact where the split exists
            return f"this data has no {claim['split']} split"
        return "no seed gave a finite value" if n == 0 else "one seed: no interval yet"
    if abs(mean - claim["value"]) <= half:
        return "the claim is inside the 95% CI"
    return f"measured {'lower' if mean < claim['value'] else 'higher'}: the claim is outside the 95% CI"


def epochs_cell(row: pd.Series) -> str:
    """'2/50': the epochs the run trained of its report's own; '?' where the report's are unknown."""
    run = "—" if math.isnan(row["epochs"]) else f"{row['epochs']:.0f}"
    return f"{run}/{fmt(row['own_epochs'], '.0f', '?')}"


def vs_best(row: pd.Series, best: pd.Series) -> str:
    """Welch t-test of this row's exact accuracy over seeds against the best row's."""
    (m1, s1, n1), (m2, s2, n2) = score(row), score(best)
    if row["not_run"]:
        return "—"
    if n1 < 2 or n2 < 2:
        return "untestable (<2 seeds)"
    p = stats.ttest_ind_from_stats(m1, s1, n1, m2, s2, n2, equal_var=False).pvalue
    if math.isnan(p):  # no spread on either side: equal means are the same result, unequal ones are not
        p = 1.0 if m1 == m2 else 0.0
    if p >= ALPHA:
        return f"{SAME} (p={p:.2f})"
    return f"p={p:.3f}" if p >= 0.001 else "p<0.001"


def fmt(value: float, spec: str, missing: str = "—") -> str:
    """`value` formatted by `spec`; `missing` for None or NaN."""
    return missing if value is None or math.isnan(value) else format(value, spec)


def joined(values: pd.Series) -> str:
    """The distinct values, sorted, as one comma-separated string."""
    return ", ".join(sorted({str(v) for v in values}))
