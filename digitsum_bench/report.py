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
import json
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
from .store import atomic_write

SCHEMA = 1  # the record schema this module reads
SPLITS = ("val", "test")
METRICS = ("exact", "within_one", "mse", "mae")  # summarised over seeds in the leaderboard
SPLIT_KEYS = ("n", "loss", "exact", "within_one", "mse", "rmse", "mae", "per_sum", "confusion")
HISTORY_KEYS = ("epoch", "train_loss", "val_loss", "val_exact", "val_within_one", "lr", "seconds")
RECORD_KEYS = (
    "schema", "recipe", "report", "method", "seed", "seeds_requested", "budget", "dataset_id",
    "dataset", "code_version", "git_commit", "git_dirty", "device", "versions", "pretrained",
    "params_m", "gflops", "train_seconds", "images_per_s", "epochs_run", "selected_epoch",
    "started", "finished", "config", "claimed", "metrics", "history",
)  # fmt: skip
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
    Lock files and the `*.failed.json` records of failed runs are skipped.
    """
    folder = Path(results) / "records"
    paths = sorted(p for p in folder.rglob("*.json") if not p.name.endswith(".failed.json"))
    if not paths:
        raise BenchError(f"{folder}: no records in it; make some with `digitsum-bench run <recipe> --results {results}`")
    return _drop_duplicates(pd.DataFrame([_read_record(p) for p in paths]))


def _read_record(path: Path) -> dict:
    """One record file, checked and flattened; a BenchError names the file otherwise."""
    try:
        return {"path": str(path), **_flatten(json.loads(path.read_text(encoding="utf-8")))}
    except json.JSONDecodeError as e:
        raise BenchError(f"{path}: corrupt record (bad JSON: {e.msg}, line {e.lineno})") from e
    except KeyError as e:
        raise BenchError(f"{path}: corrupt record (missing key {e.args[0]})") from e
    except (OSError, UnicodeDecodeError, AttributeError, TypeError, ValueError) as e:
        raise BenchError(f"{path}: corrupt record ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e


def _flatten(raw: dict) -> dict:
    """The record as flat columns; KeyError/TypeError/ValueError say what is wrong with it."""
    if not isinstance(raw, dict):
        raise TypeError("not a JSON object")
    missing = [k for k in RECORD_KEYS if k not in raw]
    if missing:
        raise KeyError(", ".join(missing))
    if raw["schema"] != SCHEMA:
        raise ValueError(f"schema {raw['schema']!r}; this code reads schema {SCHEMA}")
    row = {k: raw[k] for k in RECORD_KEYS if k not in ("schema", "versions", "metrics")}
    row.update({k: _number(raw[k]) for k in NUMBERS})
    row["seeds_requested"] = tuple(int(s) for s in raw["seeds_requested"])  # hashable and countable
    row["seed"] = int(raw["seed"])
    row["finished"] = _utc(raw["finished"])
    Version(raw["code_version"])  # picking the newest code version needs a parsable one
    row["claimed"] = [{"metric": c["metric"], "value": None if c["value"] is None else float(c["value"]), "split": c["split"], "note": c.get("note", "")}
                      for c in raw["claimed"]]  # fmt: skip
    for entry in raw["history"]:
        _require(entry, HISTORY_KEYS, "history[]")
    row.update({f"version_{lib}": v for lib, v in raw["versions"].items()})
    for split in SPLITS:
        row.update(_flatten_split(raw["metrics"], split))
    return row


def _flatten_split(metrics: dict, split: str) -> dict:
    """`val_exact`, `val_per_sum`, ...; NaN/None for a split the run did not have (test on course data)."""
    values = metrics[split] if split == "val" else metrics.get(split)  # val is required, test may be null
    if values is None:
        return {f"{split}_{k}": None if k in ("per_sum", "confusion") else math.nan for k in SPLIT_KEYS}
    _require(values, SPLIT_KEYS, f"metrics.{split}")
    row = {f"{split}_{k}": _number(values[k]) for k in SPLIT_KEYS if k not in ("per_sum", "confusion")}
    row[f"{split}_per_sum"] = _array(values["per_sum"], (N_SUMS,), f"metrics.{split}.per_sum")  # null -> NaN
    row[f"{split}_confusion"] = _array(values["confusion"], (N_SUMS, N_SUMS), f"metrics.{split}.confusion")
    return row


def _require(obj: dict, keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in obj]
    if missing:
        raise KeyError(f"{where}.{', '.join(missing)}")


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


def _claims(claimed: list[dict]) -> dict:
    """The report's claims as text ("val exact 94.92%, val MSE 0.264") plus the exact claim alone."""
    exact = next((c for c in claimed if c["metric"] == "exact"), None)
    return {
        "claimed": ", ".join(_claim_text(c) for c in claimed),
        "claimed_exact": exact["value"] if exact and exact["value"] is not None else math.nan,
        "claimed_split": exact["split"] if exact else "",
    }


def _claim_text(claim: dict) -> str:
    metric, value = claim["metric"], claim["value"]
    name = {"within_one": "within-one", "mse": "MSE", "mae": "MAE"}.get(metric, metric)
    if value is None:  # the report gives words, not a number
        return f"{claim['split']} {name}: {claim['note']}"
    shown = f"{value * 100:.4g}%" if metric in ("exact", "within_one") else f"{value:.3g}"
    note = f" ({claim['note']})" if claim["note"] else ""
    return f"{claim['split']} {name} {shown}{note}"


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
*pretrained*: `imagenet` loaded ImageNet weights; `unavailable` means the report used them but
none were found, so the run trained from scratch.
*claimed*: the reports' own numbers, measured on the course data (not public) - claims,
not measurements of this benchmark, and not on the dataset of the table."""


def _markdown(board: pd.DataFrame) -> str:
    """The leaderboard as markdown: one table per (budget, dataset), never mixed."""
    parts = ["# digitsum-bench leaderboard", "", LEGEND]
    for _, table in board.groupby(TABLE, sort=True):
        parts += ["", _table_header(table), "", _markdown_table(_table_cells(table))]
    return "\n".join(parts) + "\n"


def _table_header(table: pd.DataFrame) -> str:
    first = table.iloc[0]
    splits = set(table["split"])
    ranked = f"{splits.pop()} split" if len(splits) == 1 else "test split where measured, else val (marked)"
    return (
        f"## budget `{first['budget']}` · dataset {first['dataset']} (`{first['dataset_id']}`) · "
        f"device {_joined(table['device'])} · code version {_joined(table['code_version'])} · ranked on {ranked}"
    )


def _table_cells(table: pd.DataFrame) -> pd.DataFrame:
    """Formatted cells, one row per recipe, in leaderboard order."""
    best = table.iloc[0]
    mixed = table["split"].nunique() > 1
    rows = []
    for rank, (_, row) in enumerate(table.iterrows(), start=1):
        split = row["split"]
        rows.append({
            "#": rank,
            "recipe": f"`{row['recipe']}`",
            "report": row["report"],
            "exact % (95% CI)": _exact_cell(row) + (f" ({split})" if mixed else ""),
            "vs best": "best" if rank == 1 else _vs_best(row, best),
            "within-one %": _fmt(row[f"{split}_within_one_mean"] * 100, ".1f"),
            "MSE": _fmt(row[f"{split}_mse_mean"], ".3f"),
            "MAE": _fmt(row[f"{split}_mae_mean"], ".3f"),
            "GFLOPs": _fmt(row["gflops"], ".3g"),
            "params (M)": _fmt(row["params_m"], ".3g"),
            "train time": _duration(row["train_seconds"]),
            "seeds done/asked": f"{row['n_seeds']}/{row['seeds_requested']}",
            "pretrained": row["pretrained"],
            "claimed by report (course data)": f"claim: {row['claimed']}" if row["claimed"] else "—",
        })  # fmt: skip
    return pd.DataFrame(rows)


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
    records = load_records(results)
    board = leaderboard(records)
    files = {out / "leaderboard.csv": board.to_csv(index=False).encode(), out / "leaderboard.md": _markdown(board).encode()}
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


def check_gate(records: pd.DataFrame, baseline: dict) -> tuple[bool, str]:
    """Compare fresh CI records with a baseline; returns (passed, a table to print).

    A recipe fails when its mean test exact accuracy over the baseline's seeds is below the
    baseline's by more than `tolerance`, or when a baseline seed has no record.
    """
    budget, dataset_id, tolerance, recipes = _baseline_fields(baseline)
    current = _current(records)
    runs = current[(current["budget"] == budget) & (current["dataset_id"] == dataset_id)]
    table = pd.DataFrame([_gate_row(runs[runs["recipe"] == name], name, ref, tolerance) for name, ref in recipes.items()])
    failed = table[table["verdict"] != "ok"]
    verdict = (
        f"gate passed: {len(table)} recipe(s) within {tolerance * 100:.1f} points of the baseline"
        if failed.empty
        else "gate FAILED: " + "; ".join(f"{r.recipe} ({r.verdict.removeprefix('FAIL: ')})" for r in failed.itertuples())
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


def _gate_row(runs: pd.DataFrame, name: str, ref: dict, tolerance: float) -> dict:
    """One row of the gate table: baseline vs now on the baseline's seeds, and its verdict."""
    seeds = [int(s) for s in ref["seeds"]]
    have = runs[runs["seed"].isin(seeds)]
    missing = sorted(set(seeds) - set(have["seed"]))
    now = {k: math.nan if missing else have[k].mean() for k in ("test_exact", "test_within_one", "test_mse")}
    exact = now["test_exact"]
    if missing:
        verdict = f"FAIL: no record for seed {', '.join(map(str, missing))}"
    elif math.isnan(exact):
        verdict = "FAIL: no test metrics"
    elif exact < ref["test_exact"] - tolerance - EPS:
        verdict = f"FAIL: more than {tolerance * 100:.1f} points below"
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
        "verdict": verdict,
    }


def make_baseline(records: pd.DataFrame, recipes: list[str], tolerance: float, budget: str = "ci") -> dict:
    """A gate baseline from the current `budget` records of `recipes` (after an intended change)."""
    if not recipes:
        raise BenchError("gate baseline: name at least one recipe")
    if not 0 <= tolerance < 1:
        raise BenchError(f"gate tolerance {tolerance}: must be a fraction in [0, 1), e.g. 0.03")
    current = _current(records)
    runs = current[(current["budget"] == budget) & current["recipe"].isin(recipes)]
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
        }
    code_version = str(max(runs["code_version"], key=Version))
    return {"budget": budget, "dataset_id": datasets[0], "tolerance": tolerance, "code_version": code_version,
            "recipes": entries}  # fmt: skip
