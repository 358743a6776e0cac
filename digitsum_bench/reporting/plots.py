"""The report's plots: five PNGs per (budget, dataset), drawn from the leaderboard rows and their runs.

Owns the plot functions (`PLOTS`, by name), their file names (`plot_file`) and rendering
them all to PNG bytes (`render_plots`). pyplot-free: no global figure state, renders with Agg.
"""

from __future__ import annotations

import hashlib
import io
import math
import re

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import rc_context, ticker
from matplotlib.figure import Figure

from ..errors import printable
from ..schema import N_SUMS
from .leaderboard import TABLE, board_runs

# Each plot function takes one table's leaderboard rows, their run records and a title suffix,
# and returns a figure.


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
    front = pareto_front(points, "GFLOPs", "exact")
    ax.step(front["GFLOPs"], front["exact"], where="post", ls="--", color="black", lw=1, label="Pareto front")
    if (points["GFLOPs"] > 0).all():
        ax.set_xscale("log")  # the recipes span orders of magnitude of compute
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(ticker.FuncFormatter(_label_2_and_5))
    ax.margins(x=0.15)  # room for the recipe names
    ax.legend(title="report", fontsize=8)
    return fig


def _exact(board: pd.DataFrame, stat: str) -> pd.Series:
    """Each row's exact-accuracy `stat` ("mean" or "std") on the split it is ranked on."""
    return board[f"test_exact_{stat}"].where(board["split"] == "test", board[f"val_exact_{stat}"])


def _label_2_and_5(value: float, _) -> str:
    """Minor log ticks: label 2x and 5x only, as the others would overlap."""
    mantissa = round(value / 10 ** math.floor(math.log10(value)))
    return f"{value:g}" if mantissa in (2, 5) else ""


def pareto_front(points: pd.DataFrame, cost: str, value: str) -> pd.DataFrame:
    """The points no other point beats: none costs the same or less and scores higher."""
    ordered = points.sort_values([cost, value], ascending=[True, False])
    best_before = ordered[value].cummax().shift(fill_value=-math.inf)
    return ordered[ordered[value] > best_before]


def _plot_claimed_vs_reproduced(rows: pd.DataFrame, runs: pd.DataFrame, where: str) -> Figure:
    """Each exact claim beside the measured exact on the claim's own split, for rows of their report's
    own budget (render_plots draws it only where there are some)."""
    rows = _claim_rows(rows)
    fig, ax = _figure(12, 1.5 + 0.6 * len(rows))
    split_of = dict(zip(rows["recipe"], rows["claimed_split"]))
    label = {r.recipe: f"{r.recipe}\n({r.claimed_split} split)" for r in rows.itertuples()}
    mine = runs[runs["recipe"].isin(split_of)]
    bars = pd.concat([
        pd.DataFrame({"recipe": rows["recipe"].map(label), "exact accuracy (%)": rows["claimed_exact"] * 100,
                      "source": "claimed by the report\n(course data, not measured here)"}),
        pd.DataFrame({"recipe": mine["recipe"].map(label), "source": "reproduced here, same split\n(mean ± sd over seeds)",
                      "exact accuracy (%)": [r[f"{split_of[r['recipe']]}_exact"] * 100 for _, r in mine.iterrows()]}),
    ])  # fmt: skip
    sns.barplot(data=bars, x="exact accuracy (%)", y="recipe", hue="source", order=[label[r] for r in rows["recipe"]],
                errorbar="sd", ax=ax)  # fmt: skip
    ax.set(xlim=(0, 100), ylabel="", title=f"Claimed vs reproduced exact accuracy, at each report's own budget\n{where}")
    sns.move_legend(ax, "center left", bbox_to_anchor=(1.01, 0.5), title=None, fontsize=8)
    return fig


def _claim_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The measured rows of their report's own budget that have an exact claim."""
    return rows[rows["own_budget"] & (rows["n_seeds"] > 0)].dropna(subset=["claimed_exact"])


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
        for _, r in runs.iterrows() for h in r["history"] if h["val_exact"] is not None  # null: not scored that epoch
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
    if len(slug) > 80:  # a name of any length still makes a file name the file system takes
        slug = f"{slug[:40]}-{hashlib.sha256(f'{budget}/{dataset_id}'.encode()).hexdigest()[:12]}"
    return f"{name}_{slug}.png"


def render_plots(records: pd.DataFrame, board: pd.DataFrame) -> dict[str, bytes]:
    """PNG bytes by file name, five plots per (budget, dataset) (claimed vs reproduced only where runs of
    their report's own budget have claims); names carry both. A recipe with a row per weight status is named by
    each row's label, on its rows and its runs alike (leaderboard.board_runs)."""
    runs_now = board_runs(records)
    runs_now, board = runs_now.assign(recipe=runs_now["label"]), board.assign(recipe=board["label"])
    board = board.assign(**{c: board[c].map(lambda v: printable(v) if isinstance(v, str) else v)
                            for c in board.columns if board[c].dtype == object})  # a font has no glyph for ESC
    files = {}
    for (budget, dataset_id), rows in board[board["n_seeds"] > 0].groupby(TABLE, sort=True):
        runs = runs_now[(runs_now["budget"] == budget) & (runs_now["dataset_id"] == dataset_id)]
        where = f"budget {budget} · {rows['dataset'].iloc[0]} ({dataset_id})"
        for name, plot in PLOTS.items():
            if name == "claimed_vs_reproduced" and _claim_rows(rows).empty:
                continue  # no run of a report's own budget with a claim: nothing like for like to set side by side
            with rc_context({"text.parse_math": False}):  # a record's '$' is text: mathtext would fail on '$x^{$'
                files[plot_file(name, budget, dataset_id)] = _png(plot(rows, runs, where))
    return files


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()

