"""Reporting: read run records, build the leaderboard, its tables and plots, and the CI gate.

Run writes records; report only reads them (no training, no GPU), so everything here can be
regenerated from `<results>/records/` at any time. A record is one finished run:
`<results>/records/<budget>/<dataset_id>/<recipe>/seed<seed>.json`.

Results are quoted as a mean and spread over seeds, and a table never mixes budgets or
datasets. The reports' claimed numbers are shown beside ours, always labelled as claims:
they were measured on the course data, not by this benchmark.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import ticker
from matplotlib.figure import (
    Figure,  # pyplot-free: no global figure state, renders with Agg
)
from packaging.version import Version
from scipy import stats

from .errors import BenchError
from .metrics import N_SUMS
from .store import RECORD_KEYS, SCHEMA, OtherSchema, atomic_write, read_estimates, read_record  # noqa: F401 - SCHEMA: re-exported

SPLITS = ("val", "test")
METRICS = ("exact", "within_one", "mse", "mse_raw", "mae")  # summarised over seeds in the leaderboard
SCALARS = ("n", "loss", "exact", "within_one", "mse", "mse_raw", "rmse", "mae")  # per split; mse_raw may be absent
NUMBERS = ("params_m", "gflops", "train_seconds", "images_per_s")  # null in JSON -> NaN
RUN = ["recipe", "seed", "budget", "dataset_id", "code_version"]  # a second record of one run is a duplicate
GROUP = ["recipe", "budget", "dataset_id"]  # one leaderboard row
TABLE = ["budget", "dataset_id"]  # one markdown table, one set of plots
ALPHA = 0.05  # Welch test level for "not significantly worse than the best row"
SAME = "≈"  # the mark for such a row
EPS = 1e-9  # float slack in the gate: 0.41 - 0.03 must accept 0.38


# ----------------------------------------------------------------------------------------
# Reading records
# ----------------------------------------------------------------------------------------


def load_records(results: Path) -> pd.DataFrame:
    """All records under `results/records`, one row each, duplicates of a run removed.

    Scalars become flat columns (`test_exact`, `version_torch`, ...); `*_per_sum` and
    `*_confusion` are numpy arrays; `history`, `claimed` and `config` stay as parsed JSON.
    Lock files and the `*.failed.json` records of failed runs are skipped, and so, with a
    warning, are records of another schema (`run` redoes them).
    """
    folder = Path(results) / "records"
    paths = sorted(p for p in folder.rglob("*.json") if not p.name.endswith(".failed.json"))
    rows = []
    for path in paths:
        try:
            rows.append(_read_record(path))
        except OtherSchema as e:
            warnings.warn(f"skipped {e}", stacklevel=2)
    if not rows:
        raise BenchError(f"{folder}: no records in it; make some with "
                         f"`digitsum-bench run --recipe NAME --results {results}`")
    return _drop_duplicates(pd.DataFrame(rows))


def _read_record(path: Path) -> dict:
    """One record file, checked (store.read_record) and flattened; a BenchError names the file otherwise."""
    raw = read_record(path)
    try:
        return {"path": str(path), **_flatten(raw)}
    except (KeyError, AttributeError, TypeError, ValueError) as e:
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
    for split in SPLITS:
        row.update(_flatten_split(raw["metrics"], split))
    return row


def _flatten_split(metrics: dict, split: str) -> dict:
    """`val_exact`, `val_per_sum`, ...; NaN/None for a split the run did not have (test on course data)
    and for `mse_raw` in records made before it was measured."""
    values = metrics.get(split)
    if values is None:
        return {f"{split}_{k}": math.nan for k in SCALARS} | {f"{split}_per_sum": None, f"{split}_confusion": None}
    row = {f"{split}_{k}": _number(values.get(k)) for k in SCALARS}
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


def _current(records: pd.DataFrame) -> pd.DataFrame:
    """Only the records made by the newest code version of each (recipe, budget, dataset)."""
    newest = records.groupby(GROUP)["code_version"].transform(lambda v: str(max(v, key=Version)))
    return records[records["code_version"] == newest]


# ----------------------------------------------------------------------------------------
# The leaderboard
# ----------------------------------------------------------------------------------------


def leaderboard(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (recipe, budget, dataset_id): means and sample stds over seeds, cost, claims.

    Uses the newest code version present for each row. Sorted by test exact accuracy, or val
    where a row has no test split (course data), best first. The `split` column says which.
    """
    board = pd.DataFrame([_summarise(runs) for _, runs in _current(records).groupby(GROUP, sort=False)])
    score = board["test_exact_mean"].fillna(board["val_exact_mean"])
    board = board.assign(_score=score).sort_values(["_score", "recipe"], ascending=[False, True], kind="stable")
    return board.drop(columns="_score").reset_index(drop=True)


def _summarise(runs: pd.DataFrame) -> dict:
    """One leaderboard row from the seeds of one recipe on one budget and dataset."""
    latest = runs.sort_values("finished").iloc[-1]  # names and claims as the latest run states them
    asked = set().union(*runs["seeds_requested"])
    row = {k: latest[k] for k in ("recipe", "report", "method", "budget", "dataset_id", "dataset")}
    row["device"] = _joined(runs["device"])
    row["n_seeds"] = runs["seed"].nunique()
    row["seeds_requested"] = len(asked)
    row["complete"] = asked <= set(runs["seed"])
    for split in SPLITS:
        for metric in METRICS:
            row[f"{split}_{metric}_mean"] = runs[f"{split}_{metric}"].mean()
            row[f"{split}_{metric}_std"] = runs[f"{split}_{metric}"].std()  # ddof=1; NaN for one seed
    row.update({k: runs[k].mean() for k in NUMBERS})
    row.update(_claims(latest["claimed"]))
    row["pretrained"] = _joined(runs["pretrained"])
    row["code_version"] = latest["code_version"]
    row["git_commit"] = _joined(runs["git_commit"])
    row["git_dirty"] = bool(runs["git_dirty"].any())
    row["split"] = "test" if runs["test_exact"].notna().any() else "val"  # the split the row is ranked on
    return row


def _joined(values: pd.Series) -> str:
    return ", ".join(sorted({str(v) for v in values}))


CLAIM_METRICS = ("exact", "within_one", "mse_raw", "mse", "mae")  # each beside the measured metric of its definition
CLAIM_NAMES = {"exact": "exact", "within_one": "within-one", "mse_raw": "MSE raw", "mse": "MSE (rounded)", "mae": "MAE"}


def _claims(claimed: list[dict]) -> dict:
    """The report's claims as text ("val exact 94.92%, val MSE raw 0.264"), each claimed number
    (`claimed_exact`, `claimed_mse_raw`, ...; NaN where none), and the exact claim's split."""
    by_metric = {c["metric"]: c for c in claimed}
    exact = by_metric.get("exact")
    values = {f"claimed_{m}": by_metric[m]["value"] if m in by_metric and by_metric[m]["value"] is not None
              else math.nan for m in CLAIM_METRICS}  # fmt: skip
    return {
        "claimed": ", ".join(_claim_text(c) for c in claimed),
        **values,
        "claimed_split": exact["split"] if exact else "",
        "claims": claimed,  # the list itself, for the markdown cells (not written to the CSV)
    }


def _claim_text(claim: dict) -> str:
    name = CLAIM_NAMES.get(claim["metric"], claim["metric"])
    return f"{claim['split']} {name} {_claim_value(claim)}".replace(f"{name} :", f"{name}:")


def _claim_value(claim: dict) -> str:
    """'94.92%', '~0.39 (approximately)', ": 'unable to learn'" (words where the report gives no number)."""
    value, note = claim["value"], claim["note"]
    if value is None:
        return f": {note}"
    shown = f"{value * 100:.4g}%" if claim["metric"] in ("exact", "within_one") else f"{value:.3g}"
    return shown + (f" ({note})" if note else "")


def _exact(board: pd.DataFrame, stat: str) -> pd.Series:
    """Each row's exact-accuracy `stat` ("mean" or "std") on the split it is ranked on."""
    return board[f"test_exact_{stat}"].where(board["split"] == "test", board[f"val_exact_{stat}"])


# ----------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------

LEGEND = f"""\
Exact accuracy is the mean over seeds ± the half-width of its 95% confidence interval
(t-distribution over seeds; n/a with one seed). Other numbers are means over seeds.
*vs best*: `best` marks the top row; `{SAME}` marks a row whose difference from the best row
is not significant over seeds (Welch t-test, p ≥ {ALPHA}); `p=…` rows are significantly
worse; `untestable` means fewer than 2 seeds on one side, so the difference cannot be tested.
*Two MSEs*: exact, within-one, *MSE (rounded)* and MAE score the integer predicted sum (rounded
regression output, argmax or decoded digits). *MSE raw* scores the unrounded output: the
regression output itself, or the expected sum under a 37-way or digit head. The reports'
MSE claims are of the raw kind (report 002: its MAE x 6,000 is a whole number and its MSE is
not; report 004 quotes its MSE loss), so they stand beside *MSE raw*.
*GFLOPs*: forward FLOPs per 40x168 image, counting 2 FLOPs per multiply-add. torchvision's
tables list multiply-adds: their 4.09 "GFLOPS" for ResNet-50 at 224x224 is 8.18 here.
*pretrained*: `imagenet` loaded ImageNet weights; `unavailable` means the report used them but
none were found, so the run trained from scratch.
*claim* columns: the reports' own numbers, each beside the measured metric of the same
definition, with the split they were quoted on; measured on the course data (not public) -
claims, not measurements of this benchmark, and not on the dataset of the table."""


BUDGET_ORDER = ("full", "quick", "ci", "smoke")  # tables in this order; check-only budgets last
CHECK_ONLY = ("smoke",)  # budgets whose accuracies mean nothing (train.CHECK_ONLY)


def _markdown(board: pd.DataFrame, notes: list[dict] = ()) -> str:
    """The leaderboard as markdown: one table per (budget, dataset), never mixed.

    Under each table, the recipes left out on a CPU at that budget (`notes`, from
    store.read_estimates) with their estimated time. Check-only budgets come last, marked so.
    """
    parts = ["# digitsum-bench leaderboard", "", LEGEND]
    order = lambda budget: BUDGET_ORDER.index(budget) if budget in BUDGET_ORDER else len(BUDGET_ORDER)  # noqa: E731
    for (budget, dataset_id), table in sorted(board.groupby(TABLE), key=lambda kv: (order(kv[0][0]), kv[0][1])):
        parts += ["", _table_header(table), ""]
        if budget in CHECK_ONLY:
            parts += [f"*The `{budget}` budget only checks that every recipe runs end to end: its accuracies "
                      "mean nothing and are not results.*", ""]
        parts += [_markdown_table(_table_cells(table))]
        parts += _needs_gpu(notes, budget, dataset_id, set(table["recipe"]))
    return "\n".join(parts) + "\n"


def _needs_gpu(notes: list[dict], budget: str, dataset_id: str, measured: set[str]) -> list[str]:
    """Lines naming the recipes of this table left out on a CPU, with their estimated CPU time per seed."""
    left = [n for n in notes if n["budget"] == budget and n["dataset_id"] == dataset_id and n["recipe"] not in measured]
    if not left:
        return []
    lines = ["", f"**Needs a GPU at the `{budget}` budget** (not run on a CPU; estimated CPU time per seed):", ""]
    for n in sorted(left, key=lambda n: n["estimated_seconds"]):
        lines.append(f"- `{n['recipe']}`: about {_duration(float(n['estimated_seconds']))} on {n.get('device', 'a CPU')}")
    return lines


def comparison_table(results: Path, committed: Path, budget: str) -> str:
    """The runs in `results` at `budget` next to the committed leaderboard's rows of the same budget.

    Printed at the end of a `run` into a folder of one's own, so that a new user sees at once
    how their numbers compare with the ones shipped with the code.
    """
    mine = leaderboard(load_records(results))
    mine = mine[mine["budget"] == budget].assign(where="this run")
    csv = Path(committed) / "leaderboard.csv"
    try:
        theirs = pd.read_csv(csv)
        theirs = theirs[theirs["budget"] == budget].assign(where="committed")
    except (OSError, ValueError, KeyError):
        theirs = pd.DataFrame()
    rows = pd.concat([mine, theirs], ignore_index=True)
    if rows.empty:
        return f"no {budget} runs to compare"
    rows = rows.assign(exact=rows["test_exact_mean"].fillna(rows["val_exact_mean"]))
    rows = rows.sort_values(["exact", "where"], ascending=[False, False], kind="stable")
    table = pd.DataFrame({
        "recipe": rows["recipe"], "results": rows["where"], "seeds": rows["n_seeds"],
        "exact %": (rows["exact"] * 100).round(1),
        "within-one %": (rows["test_within_one_mean"].fillna(rows["val_within_one_mean"]) * 100).round(1),
        "train time": rows["train_seconds"].map(_duration), "device": rows["device"],
    })  # fmt: skip
    return (f"{budget} budget: this run next to the committed leaderboard ({csv})\n"
            + table.to_string(index=False))


def _table_header(table: pd.DataFrame) -> str:
    first = table.iloc[0]
    splits = set(table["split"])
    ranked = f"{splits.pop()} split" if len(splits) == 1 else "test split where measured, else val (marked)"
    return (
        f"## budget `{first['budget']}` · dataset {first['dataset']} (`{first['dataset_id']}`) · "
        f"device {_joined(table['device'])} · code version {_joined(table['code_version'])} · ranked on {ranked}"
    )


def _table_cells(table: pd.DataFrame) -> pd.DataFrame:
    """Formatted cells, one row per recipe, in leaderboard order; each claim beside its metric."""
    best = table.iloc[0]
    mixed = table["split"].nunique() > 1
    claimed = {c["metric"] for claims in table["claims"] for c in claims}
    rows = []
    for rank, (_, row) in enumerate(table.iterrows(), start=1):
        split = row["split"]
        measured = {
            "exact": ("exact % (95% CI)", _exact_cell(row) + (f" ({split})" if mixed else "")),
            "within_one": ("within-one %", _fmt(row[f"{split}_within_one_mean"] * 100, ".1f")),
            "mse_raw": ("MSE raw", _fmt(row[f"{split}_mse_raw_mean"], ".3f")),
            "mse": ("MSE (rounded)", _fmt(row[f"{split}_mse_mean"], ".3f")),
            "mae": ("MAE", _fmt(row[f"{split}_mae_mean"], ".3f")),
        }
        cells = {"#": rank, "recipe": f"`{row['recipe']}`", "report": row["report"]}
        for metric, (column, cell) in measured.items():
            cells[column] = cell
            if metric == "exact" or metric in claimed:
                cells[f"claim: {CLAIM_NAMES[metric]}"] = _claim_cell(row["claims"], metric)
            if metric == "exact":
                cells["vs best"] = "best" if rank == 1 else _vs_best(row, best)
        cells |= {
            "GFLOPs (2/MAC)": _fmt(row["gflops"], ".3g"),
            "params (M)": _fmt(row["params_m"], ".3g"),
            "train time": _duration(row["train_seconds"]),
            "seeds done/asked": f"{row['n_seeds']}/{row['seeds_requested']}",
            "pretrained": row["pretrained"],
        }
        rows.append(cells)
    return pd.DataFrame(rows)


def _claim_cell(claims: list[dict], metric: str) -> str:
    """The report's claim of `metric`, e.g. 'val 94.92%', or '—' where it claims none."""
    return "; ".join(f"{c['split']}{'' if c['value'] is None else ' '}{_claim_value(c)}"
                     for c in claims if c["metric"] == metric) or "—"  # fmt: skip


def _exact_cell(row: pd.Series) -> str:
    mean, std, n = _score(row)
    half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n) if n >= 2 else math.nan
    return f"{_fmt(mean * 100, '.1f')} ± {_fmt(half * 100, '.1f', 'n/a')}"


def _vs_best(row: pd.Series, best: pd.Series) -> str:
    """Welch t-test of this row's exact accuracy over seeds against the best row's."""
    (m1, s1, n1), (m2, s2, n2) = _score(row), _score(best)
    if n1 < 2 or n2 < 2:
        return "untestable (<2 seeds)"
    p = stats.ttest_ind_from_stats(m1, s1, n1, m2, s2, n2, equal_var=False).pvalue
    if math.isnan(p):  # no spread on either side: equal means are the same result, unequal ones are not
        p = 1.0 if m1 == m2 else 0.0
    if p >= ALPHA:
        return f"{SAME} (p={p:.2f})"
    return f"p={p:.3f}" if p >= 0.001 else "p<0.001"


def _score(row: pd.Series) -> tuple[float, float, int]:
    split = row["split"]
    return row[f"{split}_exact_mean"], row[f"{split}_exact_std"], int(row["n_seeds"])


def _fmt(value: float, spec: str, missing: str = "—") -> str:
    return missing if value is None or math.isnan(value) else format(value, spec)


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _markdown_table(cells: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(cells.columns) + " |", "|" + "---|" * len(cells.columns)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# Plots: one set per (budget, dataset); each function takes the table's leaderboard rows,
# their run records and a title suffix, and returns a figure.
# ----------------------------------------------------------------------------------------


def _plot_accuracy_vs_gflops(rows: pd.DataFrame, runs: pd.DataFrame, where: str) -> Figure:
    fig, ax = _figure(9, 6)
    points = pd.DataFrame({
        "recipe": rows["recipe"], "report": rows["report"], "GFLOPs": rows["gflops"],
        "exact": _exact(rows, "mean") * 100, "sd": _exact(rows, "std").fillna(0) * 100,
    }).dropna(subset=["GFLOPs", "exact"])  # fmt: skip
    ax.set(xlabel="GFLOPs per image", ylabel="exact accuracy (%), mean ± sd over seeds",
           title=f"Accuracy vs compute\n{where}")  # fmt: skip
    if points.empty:
        return _no_data(fig, ax, "no run recorded its GFLOPs")
    sns.scatterplot(data=points, x="GFLOPs", y="exact", hue="report", s=70, ax=ax, zorder=3)
    ax.errorbar(points["GFLOPs"], points["exact"], yerr=points["sd"], fmt="none", ecolor="grey", capsize=3)
    for p in points.itertuples():
        ax.annotate(p.recipe, (p.GFLOPs, p.exact), xytext=(5, 4), textcoords="offset points", fontsize=8)
    front = _pareto_front(points, "GFLOPs", "exact")
    ax.step(front["GFLOPs"], front["exact"], where="post", ls="--", color="black", lw=1, label="Pareto front")
    if (points["GFLOPs"] > 0).all():
        ax.set_xscale("log")  # the recipes span orders of magnitude of compute
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(ticker.FuncFormatter(_label_2_and_5))
    ax.margins(x=0.15)  # room for the recipe names
    ax.legend(title="report", fontsize=8)
    return fig


def _label_2_and_5(value: float, _) -> str:
    """Minor log ticks: label 2x and 5x only, as the others would overlap."""
    mantissa = round(value / 10 ** math.floor(math.log10(value)))
    return f"{value:g}" if mantissa in (2, 5) else ""


def _pareto_front(points: pd.DataFrame, cost: str, value: str) -> pd.DataFrame:
    """The points no other point beats: none costs the same or less and scores higher."""
    ordered = points.sort_values([cost, value], ascending=[True, False])
    best_before = ordered[value].cummax().shift(fill_value=-math.inf)
    return ordered[ordered[value] > best_before]


def _plot_claimed_vs_reproduced(rows: pd.DataFrame, runs: pd.DataFrame, where: str) -> Figure:
    fig, ax = _figure(12, 1.5 + 0.6 * len(rows))
    split_of = dict(zip(rows["recipe"], rows["split"]))
    label = {r.recipe: r.recipe + (f"\n(claim on {r.claimed_split})" if r.claimed_split else "") for r in rows.itertuples()}
    claimed = rows.dropna(subset=["claimed_exact"])
    bars = pd.concat([
        pd.DataFrame({"recipe": claimed["recipe"].map(label), "exact accuracy (%)": claimed["claimed_exact"] * 100,
                      "source": "claimed by the report\n(course data, not measured here)"}),
        pd.DataFrame({"recipe": runs["recipe"].map(label), "source": "reproduced here\n(mean ± sd over seeds)",
                      "exact accuracy (%)": [r[f"{split_of[r['recipe']]}_exact"] * 100 for _, r in runs.iterrows()]}),
    ])  # fmt: skip
    sns.barplot(data=bars, x="exact accuracy (%)", y="recipe", hue="source", order=[label[r] for r in rows["recipe"]],
                errorbar="sd", ax=ax)  # fmt: skip
    ax.set(xlim=(0, 100), ylabel="", title=f"Claimed vs reproduced exact accuracy\n{where}")
    sns.move_legend(ax, "center left", bbox_to_anchor=(1.01, 0.5), title=None, fontsize=8)
    return fig


def _plot_per_sum_accuracy(rows: pd.DataFrame, runs: pd.DataFrame, where: str) -> Figure:
    fig, ax = _figure(15, 1.8 + 0.45 * len(rows))
    split_of = dict(zip(rows["recipe"], rows["split"]))
    found = [(r["recipe"], r[f"{split_of[r['recipe']]}_per_sum"]) for _, r in runs.iterrows()]
    found = [(name, per_sum) for name, per_sum in found if per_sum is not None]
    table = pd.DataFrame([v for _, v in found], index=[name for name, _ in found], columns=range(N_SUMS))
    table = table.groupby(level=0).mean().reindex(rows["recipe"]) * 100  # seeds averaged; NaN: sum never occurs
    sns.heatmap(table, vmin=0, vmax=100, cmap="viridis", cbar_kws={"label": "exact accuracy (%)"}, ax=ax)
    ax.set(xlabel="true sum", ylabel="", title=f"Exact accuracy per true sum (blank: sum absent)\n{where}")
    return fig


def _plot_training_curves(rows: pd.DataFrame, runs: pd.DataFrame, where: str) -> Figure:
    fig, ax = _figure(9, 6)
    curves = pd.DataFrame([
        {"recipe": r["recipe"], "seed": r["seed"], "epoch": h["epoch"], "val exact (%)": h["val_exact"] * 100}
        for _, r in runs.iterrows() for h in r["history"]
    ])  # fmt: skip
    ax.set(title=f"Validation exact accuracy per epoch (mean ± sd over seeds)\n{where}")
    if curves.empty:
        return _no_data(fig, ax, "no run recorded a training history")
    order = [name for name in rows["recipe"] if name in set(curves["recipe"])]
    sns.lineplot(data=curves, x="epoch", y="val exact (%)", hue="recipe", hue_order=order, errorbar="sd", ax=ax)
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    return fig


def _plot_confusion(rows: pd.DataFrame, runs: pd.DataFrame, where: str) -> Figure:
    fig, ax = _figure(10, 8.5)
    best = rows.iloc[0]
    split = best["split"]
    matrices = [m for m in runs.loc[runs["recipe"] == best["recipe"], f"{split}_confusion"] if m is not None]
    counts = np.sum(matrices, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):  # a true sum absent from the split: empty row
        share = counts / counts.sum(axis=1, keepdims=True) * 100
    sns.heatmap(share, vmin=0, vmax=100, cmap="Blues", square=True, cbar_kws={"label": "% of the true sum's images"},
                ax=ax)  # fmt: skip
    ax.tick_params(labelsize=7)
    ax.set(xlabel="predicted sum", ylabel="true sum",
           title=f"Confusion of the best recipe, {best['recipe']} ({split} split, {len(matrices)} seeds pooled)\n{where}")  # fmt: skip
    return fig


PLOTS = {
    "accuracy_vs_gflops": _plot_accuracy_vs_gflops,
    "claimed_vs_reproduced": _plot_claimed_vs_reproduced,
    "per_sum_accuracy": _plot_per_sum_accuracy,
    "training_curves": _plot_training_curves,
    "confusion": _plot_confusion,
}


def _figure(width: float, height: float) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots()


def _no_data(fig: Figure, ax, message: str) -> Figure:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    return fig


def plot_file(name: str, budget: str, dataset_id: str) -> str:
    """The file name (under `plots/`) of plot `name` for one (budget, dataset)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{budget}_{dataset_id}")
    return f"{name}_{slug}.png"


def _plots(records: pd.DataFrame, board: pd.DataFrame) -> dict[str, bytes]:
    """PNG bytes by file name, five plots per (budget, dataset); names carry both."""
    current = _current(records)
    files = {}
    for (budget, dataset_id), rows in board.groupby(TABLE, sort=True):
        runs = current[(current["budget"] == budget) & (current["dataset_id"] == dataset_id)]
        where = f"budget {budget} · {rows['dataset'].iloc[0]} ({dataset_id})"
        for name, plot in PLOTS.items():
            files[plot_file(name, budget, dataset_id)] = _png(plot(rows, runs, where))
    return files


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------


def write_report(results: Path, out: Path | None = None) -> list[Path]:
    """Write `leaderboard.csv`, `leaderboard.md`, `plots/*.png` and the web page `index.html` (page.py)
    from the records under `results`.

    Everything is rendered in memory first and each file is replaced atomically, so an error
    (a corrupt record, a failing plot) leaves the previous report as it was. Returns the paths.
    """
    results = Path(results)
    out = results if out is None else Path(out)
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out}: is a file; name a folder for the leaderboard and plots")
    records = load_records(results)
    board = leaderboard(records)
    csv = board.drop(columns="claims").to_csv(index=False).encode()
    files = {out / "leaderboard.csv": csv, out / "leaderboard.md": _markdown(board, read_estimates(results)).encode()}
    from .page import render_page  # page.py builds on this module's cells and plot names

    plots = _plots(records, board)
    files.update({out / "plots" / name: png for name, png in plots.items()})
    files[out / "index.html"] = render_page(records, board, plots).encode()
    for path, data in files.items():
        _write_atomic(path, data)
    return list(files)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename it over `path` in one step."""
    with atomic_write(path) as f:
        f.write(data)


# ----------------------------------------------------------------------------------------
# The CI accuracy gate (comparison only; retraining and the CLI live elsewhere)
# ----------------------------------------------------------------------------------------


def check_gate(records: pd.DataFrame, baseline: dict, label: str = "gate") -> tuple[bool, str]:
    """Compare fresh CI records with a baseline; returns (passed, a table to print).

    A recipe fails when its mean test exact accuracy over the baseline's seeds is below the
    baseline's by more than `tolerance`, when a baseline seed has no record, or (where the
    baseline has `loss_tolerance`) when its final training loss, the same seeds on the same data,
    differs from the baseline's by more than that either way: the training computation changed
    (augmentation, learning rate, loss, data), whether or not one epoch's accuracy can show it.
    """
    budget, dataset_id, tolerance, recipes = _baseline_fields(baseline)
    current = _current(records)
    runs = current[(current["budget"] == budget) & (current["dataset_id"] == dataset_id)]
    loss_tolerance = baseline.get("loss_tolerance")
    table = pd.DataFrame([_gate_row(runs[runs["recipe"] == name], name, ref, tolerance, loss_tolerance)
                          for name, ref in recipes.items()])
    failed = table[table["verdict"] != "ok"]
    verdict = (
        f"{label} passed: {len(table)} recipe(s) within {tolerance * 100:.1f} points of the baseline"
        if failed.empty
        else f"{label} FAILED: " + "; ".join(f"{r.recipe} ({r.verdict.removeprefix('FAIL: ')})" for r in failed.itertuples())
    )
    text = (
        f"CI accuracy gate · budget {budget} · dataset {dataset_id} · tolerance {tolerance * 100:.1f} points\n"
        + table.to_string(index=False, float_format=lambda x: f"{x:.2f}", na_rep="—")
        + f"\n{verdict}"
    )
    return failed.empty, text


def _baseline_fields(baseline: dict) -> tuple[str, str, float, dict]:
    missing = [k for k in ("budget", "dataset_id", "tolerance", "recipes") if k not in baseline]
    if missing:
        raise BenchError(f"gate baseline: missing key(s) {', '.join(missing)}")
    if not baseline["recipes"]:
        raise BenchError("gate baseline: lists no recipes")
    for name, ref in baseline["recipes"].items():
        lacking = [k for k in ("seeds", "test_exact") if k not in ref]
        if lacking or not ref.get("seeds"):
            raise BenchError(f"gate baseline: recipe {name} lacks {', '.join(lacking) or 'seeds'}")
    return baseline["budget"], baseline["dataset_id"], float(baseline["tolerance"]), baseline["recipes"]


def last_train_losses(runs: pd.DataFrame) -> list[float]:
    """Each run's last-epoch training loss (from its history), in the rows' order."""
    return [float(h[-1]["train_loss"]) for h in runs["history"]]


def final_train_loss(runs: pd.DataFrame) -> float:
    """The mean over runs of each run's last-epoch training loss."""
    return float(np.mean(last_train_losses(runs))) if len(runs) else math.nan


def _gate_row(runs: pd.DataFrame, name: str, ref: dict, tolerance: float, loss_tolerance: float | None = None) -> dict:
    """One row of the gate table: baseline vs now on the baseline's seeds, and its verdict."""
    seeds = [int(s) for s in ref["seeds"]]
    have = runs[runs["seed"].isin(seeds)]
    missing = sorted(set(seeds) - set(have["seed"]))
    now = {k: math.nan if missing else have[k].mean() for k in ("test_exact", "test_within_one", "test_mse")}
    exact = now["test_exact"]
    loss = math.nan if missing else final_train_loss(have)
    checks_loss = loss_tolerance is not None and "train_loss" in ref
    if missing:
        verdict = f"FAIL: no record for seed {', '.join(map(str, missing))}"
    elif math.isnan(exact):
        verdict = "FAIL: no test metrics"
    elif exact < ref["test_exact"] - tolerance - EPS:
        verdict = f"FAIL: more than {tolerance * 100:.1f} points below"
    elif checks_loss and abs(loss - ref["train_loss"]) > loss_tolerance + EPS:
        verdict = f"FAIL: training loss moved by more than {loss_tolerance:g}"
    else:
        verdict = "ok"
    return {
        "recipe": name,
        "seeds": ",".join(map(str, seeds)),
        "baseline exact %": ref["test_exact"] * 100,
        "now exact %": exact * 100,
        "delta": (exact - ref["test_exact"]) * 100,
        "baseline within-one %": ref.get("test_within_one", math.nan) * 100,
        "now within-one %": now["test_within_one"] * 100,
        "baseline MSE": ref.get("test_mse", math.nan),
        "now MSE": now["test_mse"],
        **({"baseline train loss": f"{ref['train_loss']:.4f}", "now train loss": f"{loss:.4f}"} if checks_loss else {}),
        "verdict": verdict,
    }


def make_baseline(records: pd.DataFrame, recipes: list[str], tolerance: float, budget: str = "ci",
                  seeds: list[int] | None = None) -> dict:
    """A gate baseline from the current `budget` records of `recipes` (of `seeds` only, if given)."""
    if not recipes:
        raise BenchError("gate baseline: name at least one recipe")
    if not 0 <= tolerance < 1:
        raise BenchError(f"gate tolerance {tolerance}: must be a fraction in [0, 1), e.g. 0.03")
    current = _current(records)
    runs = current[(current["budget"] == budget) & current["recipe"].isin(recipes)]
    if seeds is not None:
        runs = runs[runs["seed"].isin(seeds)]
    datasets = sorted(set(runs["dataset_id"]))
    if len(datasets) > 1:
        raise BenchError(f"gate baseline: {budget} records span datasets {', '.join(datasets)}; keep one")
    entries = {}
    for name in recipes:
        mine = runs[runs["recipe"] == name]
        if mine.empty or mine["test_exact"].isna().any():
            raise BenchError(f"gate baseline: recipe {name} has no {budget} record with test metrics; run it first")
        entries[name] = {
            "seeds": sorted(int(s) for s in mine["seed"]),
            "test_exact": float(mine["test_exact"].mean()),
            "test_within_one": float(mine["test_within_one"].mean()),
            "test_mse": float(mine["test_mse"].mean()),
            "train_loss": final_train_loss(mine),
        }
    code_version = str(max(runs["code_version"], key=Version))
    return {"budget": budget, "dataset_id": datasets[0], "tolerance": tolerance, "code_version": code_version,
            "recipes": entries}  # fmt: skip
