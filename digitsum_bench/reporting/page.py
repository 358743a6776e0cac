"""The leaderboard as one self-contained web page, `results/index.html`.

Owns the page's HTML, styles and script; its inline SVG charts are charts.py's. Built from the same leaderboard
rows and the same cells and claims as `leaderboard.md` (both from leaderboard.py), with no
network at all: styles and script are inline, the accuracy-vs-GFLOPs plots are embedded as
PNG data, the detail charts are inline SVG, and the other plots are linked relatively
(`plots/...`), so the page works from a checkout, a copied folder or any static host.

One table per (budget, dataset), with the device as a column, sortable by any column (a click on its header);
claims sit beside the measured metric of the same definition and are labelled as claims.
Each recipe has a detail view: method, assumptions, config, training curves, per-sum
accuracy and provenance.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..claims import claim_number, claim_text
from ..metric_table import TableView
from ..registry.budgets import CHECK_ONLY, budget_cap
from .charts import curves_svg, per_sum_svg, table_curves_svg
from .leaderboard import (
    LEVELS,
    TABLE,
    board_runs,
    claims_of,
    duration,
    epochs_cell,
    fmt,
    joined,
    latest,
    measured,
    measured_cell,
    metric_columns,
    metric_header,
    time_to_cell,
    verdict,
    vs_best,
)
from .plots import PLOTS, plot_file

HIDDEN_CONFIG = ("name", "method", "report", "assumptions", "claimed")  # shown elsewhere in the detail view


def render_page(records: pd.DataFrame, board: pd.DataFrame, plots: dict[str, bytes]) -> str:
    """The whole page as HTML text; `plots` are the report's PNGs by file name (under `plots/`). A check-only
    budget's rows are no results (accuracies at chance): they have no table here, only in the markdown."""
    runs_now = board_runs(records)
    board = board[~board["budget"].isin(CHECK_ONLY)]
    sections = []
    for number, (key, rows) in enumerate(board.groupby(TABLE, sort=True)):
        budget, dataset_id = key
        runs = runs_now[(runs_now["budget"] == budget) & (runs_now["dataset_id"] == dataset_id)
                        & runs_now["recipe"].isin(rows["recipe"])]  # fmt: skip
        sections.append(_section(f"t{number}", rows.reset_index(drop=True), runs, plots))
    versions = ", ".join(sorted(set(board["code_version"]) - {""}))
    return PAGE.format(
        versions=html.escape(versions),
        checks=", ".join(f"<code>{_e(b)}</code>" for b in CHECK_ONLY),
        n_tables=len(sections),
        sections="\n".join(sections),
        style=STYLE,
        script=SCRIPT,
    )


# ----------------------------------------------------------------------------------------
# One table and its detail views
# ----------------------------------------------------------------------------------------


def _section(gid: str, rows: pd.DataFrame, runs: pd.DataFrame, plots: dict[str, bytes]) -> str:
    first = rows.iloc[0]
    budget, dataset_id = first["budget"], first["dataset_id"]
    cap = budget_cap(budget)
    title = (f"budget <code>{_e(budget)}</code>{f' ({_e(cap)})' if cap else ''} · {_e(first['dataset'])} "
             f"(<code>{_e(dataset_id)}</code>)")  # fmt: skip
    splits = sorted(set(rows["split"]))
    note = (f"Ranked on the {splits[0]} split" if len(splits) == 1 else "Ranked on test where measured, else val")
    versions = joined(rows["code_version"].replace("", pd.NA).dropna())
    note += f"; code version {_e(versions)}. Click a column header to sort, a recipe to see its details."
    measured_rows = rows[rows["n_seeds"] > 0]
    rows = rows.assign(gid=gid)
    columns = _columns(metric_columns(rows), rows.iloc[0])
    header = "".join(_hide(f'<th data-type="{c.sort}" title="{_e(c.tip)}">{_e(c.header)}</th>', c.shown)
                     for c in columns)  # fmt: skip
    body = "\n".join(_row(row, rank, columns) for rank, (_, row) in enumerate(rows.iterrows(), start=1))
    details = "\n".join(_detail(gid, row, runs[runs["label"] == row["label"]])
                        for _, row in measured_rows.iterrows())  # fmt: skip
    details += "".join("\n" + _not_run_detail(gid, row) for _, row in rows[rows["not_run"] != ""].iterrows())
    return f"""<section class="board" id="{gid}">
<h2>{title}</h2>
<p class="note">{note}</p>
<p class="note"><button class="columns" data-table="{gid}">show all {len(columns)} columns</button> (the default
view shows the numbers a reader compares; the others, and each recipe's details, are a click away)</p>
<div class="scroll"><table class="sortable compact" data-table="{gid}">
<thead><tr>{header}</tr></thead>
<tbody>
{body}
</tbody></table></div>
{_plots_block(budget, dataset_id, plots)}
<h3>Training curves of this table, against training time</h3>
{table_curves_svg(measured_rows.assign(recipe=measured_rows["label"]), runs.assign(recipe=runs["label"]))}
<h3>Recipes in this table</h3>
{details}
</section>"""


@dataclass(frozen=True)
class Column:
    """One column of a table on the page; only the `shown` ones are visible until the reader asks for all."""

    header: str
    sort: str  # "num" or "text": how a click on the header sorts it
    tip: str  # the header's tooltip
    shown: bool  # in the default view: the numbers a reader compares
    cell: Callable[[pd.Series, int], str]  # (row, rank) -> the <td>


MEASURED_TIPS = TableView(value=lambda m: m.tip)  # each measured column's tooltip (metric_table)
SHOWN_METRICS = TableView(lambda m: m.shown)  # measured on the ranked split, in the default view
CLAIM_TIP = "the report's own claim, on the course data: not measured here"
VERDICT_TIP = ("each exact claim against the 95% confidence interval of the seeds' mean on the claim's own split; "
               "'not comparable' where the report's method started from ImageNet weights and these runs did not")


def _columns(metrics: list[tuple[str, str, str | None]], best: pd.Series) -> list[Column]:
    """The table's columns, in order; `metrics` from leaderboard.metric_columns. The default view shows rank,
    recipe, report, exact with its CI, the exact claim and its verdict, within-one, MSE raw, GFLOPs, train time
    and seeds; the rest (other metrics and splits, each claim by split, vs best, epochs, device, ...) are one
    click away."""
    columns = [
        Column("#", "num", "rank by exact accuracy", True,
               lambda r, rank: _cell(rank, "" if r["not_run"] else str(rank))),
        Column("recipe", "text", "the registry name; click for method, assumptions, config, curves, provenance",
               True, lambda r, rank: _cell(r["recipe"], _name(r), raw=True)),
        Column("report", "text", "the course report the method comes from", True,
               lambda r, rank: _cell(r["report"], r["report"])),
    ]
    for kind, metric, split in metrics:
        columns.append(_metric_column(kind, metric, split, best))
        if (kind, metric, split) == ("measured", "exact", None) and any(m[:2] == ("claim", "exact") for m in metrics):
            columns += [Column("claim: exact", "num", CLAIM_TIP, True, lambda r, rank: _claim_cell(r, "exact")),
                        Column("claim vs measured", "text", VERDICT_TIP, True, lambda r, rank: _verdict_cell(r))]
    return columns + [
        Column("epochs", "text", "epochs the run trained / its report's own", False,
               lambda r, rank: _cell(r["epochs"], epochs_cell(r))),
        *[Column(f"to {level:.0%}", "num", f"epochs and training time until validation exact first reached "
                 f"{level:.0%} (mean over the seeds that did)", False,
                 lambda r, rank, level=level: _cell(r[f"seconds_to_{level * 100:.0f}"], time_to_cell(r, level)))
          for level in LEVELS],
        Column("GFLOPs", "num", "forward GFLOPs per image", True, lambda r, rank: _cell(r["gflops"], fmt(r["gflops"], ".3g"))),
        Column("params (M)", "num", "parameters, millions", False,
               lambda r, rank: _cell(r["params_m"], fmt(r["params_m"], ".3g"))),
        Column("device", "text", "where the seeds trained", False, lambda r, rank: _cell(r["device"], r["device"])),
        Column("train time", "num", "training time per seed, every epoch at the run's median epoch time (a paused or "
               "shared machine does not inflate it); mean over seeds, per device where several", True,
               lambda r, rank: _cell(r["steady_seconds"], "<br>".join(_e(t) for t in r["train_time"].split("; ")),
                                     raw=True)),
        Column("seeds done/asked", "num", "finished seeds of the seeds asked for", True, lambda r, rank: _seeds_cell(r)),
        Column("pretrained", "text", "imagenet: ImageNet weights loaded; unavailable: asked for but not found, "
               "trained from scratch", False, lambda r, rank: _cell(r["pretrained"], r["pretrained"])),
    ]


def _metric_column(kind: str, metric: str, split: str | None, best: pd.Series) -> Column:
    header = metric_header(kind, metric, split)
    if kind == "measured":
        return Column(header, "num", MEASURED_TIPS[metric] + (f", on the {split} split" if split else ""),
                      split is None and metric in SHOWN_METRICS, lambda r, rank: _measured_cell(r, metric, split, best))
    if kind == "claim":
        return Column(header, "num", CLAIM_TIP, False, lambda r, rank: _claim_cell(r, metric, split))
    return Column(header, "text", "Welch t-test over seeds against the top row", False,
                  lambda r, rank: _cell(rank, "best" if rank == 1 else vs_best(r, best)))


def _measured_cell(row: pd.Series, metric: str, split: str | None, best: pd.Series) -> str:
    """A measured metric; the exact cell of a row ranked on another split than the top row's says which; a row
    not run says so in short, with every device's cost as its tooltip."""
    if row["not_run"] and metric == "exact" and split is None:
        return f'<td data-v="" class="not-run" title="{_e(row["not_run"])}">{_e(row["not_run_short"])}</td>'
    marked = f" ({row['split']})" if metric == "exact" and split is None and row["split"] != best["split"] else ""
    return _cell(measured(row, metric, split), measured_cell(row, metric, split) + marked)


def _name(row: pd.Series) -> str:
    """The recipe's name (with its row's weights where it has a row per weight status: `label`) as the button that
    opens its detail view (a row not run has one too: what it would cost)."""
    return f'<button class="open" data-detail="{_id(row["gid"], row["label"])}">{_e(row["label"])}</button>'


def _seeds_cell(row: pd.Series) -> str:
    if row["not_run"]:
        return _cell(0.0, "0")
    text = f"{row['n_seeds']}/{row['seeds_requested']}"
    warn = "" if row["complete"] else ' <span class="warn">incomplete</span>'
    return _cell(row["n_seeds"] / max(row["seeds_requested"], 1), _e(text) + warn, raw=True)


def _row(row: pd.Series, rank: int, columns: list[Column]) -> str:
    cells = "".join(_hide(column.cell(row, rank), column.shown) for column in columns)
    return f'<tr data-recipe="{_e(row["recipe"])}">' + cells + "</tr>"


def _hide(cell: str, shown: bool) -> str:
    """A <td> or <th> marked as hidden in the default view (the toggle shows it)."""
    return cell if shown else cell.replace(">", ' data-extra="1">', 1)


def _cell(value, text: str, raw: bool = False) -> str:
    """A table cell whose sort key is `value` (numbers sort as numbers; NaN and None sort last)."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        key = "" if math.isnan(float(value)) else repr(float(value))
    else:
        key = "" if value is None else str(value)
    return f'<td data-v="{_e(key)}">{text if raw else _e(text)}</td>'


def _claim_cell(row: pd.Series, metric: str, split: str | None = None) -> str:
    """The report's claims of one metric (on `split`, or on any), each 'claim: 94.92% (val, course data)' with its
    note as a tooltip; sorted by the first claimed number; '—' where there is none; 'not comparable: ...' where
    the claim is of another method than the row's runs."""
    claims = claims_of(row["claims"], metric, split)
    if not claims:
        return '<td data-v="" class="claim">—</td>'
    if row["not_comparable"]:
        return f'<td data-v="" class="claim">{_e(row["not_comparable"])}</td>'
    numbers = [c["value"] for c in claims if c["value"] is not None]
    key = repr(numbers[0]) if numbers else ""
    notes = "; ".join(c["note"] for c in claims if c["note"] and c["value"] is not None)  # words are shown already
    shown = "; ".join(f'claim: {_e(_clip(claim_number(c)))} <span class="where">({_e(c["split"])}, course data)</span>'
                      for c in claims)  # fmt: skip
    words = "; ".join(c["note"] for c in claims if c["value"] is None and len(c["note"]) > WORDS)
    title = f' title="{_e("; ".join(filter(None, (notes, words))))}"' if notes or words else ""
    return f'<td data-v="{_e(key)}" class="claim"{title}>{shown}</td>'


WORDS = 40  # a claim in words longer than this is cut in its cell, whole in the tooltip


def _clip(text: str) -> str:
    return text if len(text) <= WORDS else text[:WORDS].rstrip() + "…"


def _verdict_cell(row: pd.Series) -> str:
    """Each exact claim against the seeds' 95% CI on its split, in short ('val: inside the 95% CI')."""
    claims = claims_of(row["claims"], "exact")
    if row["not_run"] or not claims:
        return _cell("", "—")
    if row["not_comparable"]:
        return _cell("not comparable", "not comparable")
    verdicts = [(c["split"], verdict(row, c)) for c in claims]
    text = "; ".join(f"{split}: {v}" for split, v in verdicts)
    short = "; ".join(f"{split}: {SHORT_VERDICTS.get(v, v)}" for split, v in verdicts)
    return f'<td data-v="{_e(text)}" class="verdict" title="{_e(text)}">{_e(short)}</td>'


SHORT_VERDICTS = {"the claim is inside the 95% CI": "inside the 95% CI",
                  "measured lower: the claim is outside the 95% CI": "lower, outside the 95% CI",
                  "measured higher: the claim is outside the 95% CI": "higher, outside the 95% CI",
                  "one seed: no interval yet": "one seed, no CI"}  # fmt: skip


def _plots_block(budget: str, dataset_id: str, plots: dict[str, bytes]) -> str:
    """The accuracy-vs-GFLOPs plot embedded; the other plots of the table linked relatively."""
    parts = []
    main = plot_file("accuracy_vs_gflops", budget, dataset_id)
    if main in plots:
        data = base64.b64encode(plots[main]).decode()
        parts.append(f'<figure><img class="plot" alt="accuracy vs GFLOPs" src="data:image/png;base64,{data}">'
                     f"<figcaption>Exact accuracy vs GFLOPs per image (mean ± sd over seeds).</figcaption></figure>")
    links = [f'<a href="plots/{_e(plot_file(name, budget, dataset_id))}">{_e(name.replace("_", " "))}</a>'
             for name in PLOTS if name != "accuracy_vs_gflops" and plot_file(name, budget, dataset_id) in plots]
    parts.append(f'<p class="note">More plots of this table: {" · ".join(links)}</p>')
    return "\n".join(parts)


def _detail(gid: str, row: pd.Series, runs: pd.DataFrame) -> str:
    config = latest(runs)["config"]
    config = config if isinstance(config, dict) else {}
    assumptions = config.get("assumptions") or []
    stated = ", ".join(claim_text(c) for c in latest(runs)["claimed"])  # a capped row holds none: its records do
    claims = row["claimed"] or (f"{stated} (at the report's own budget, not this one)" if stated else "none")
    return f"""<details class="detail" id="{_id(gid, row['label'])}">
<summary><code>{_e(row['label'])}</code> — {_e(row['method'])}</summary>
<div class="panes">
<div>
<h4>Method</h4><p>{_e(row['method'])} (report {_e(row['report'])})</p>
<h4>Claimed by the report (course data, not measured here)</h4><p>{_e(claims)}</p>
<h4>Time to accuracy (validation exact, from the per-epoch history)</h4>
<p>{' · '.join(f"to {level:.0%}: {_e(time_to_cell(row, level))}" for level in LEVELS)}</p>
<h4>Assumptions (where the report was silent)</h4>
<ul>{''.join(f'<li>{_e(a)}</li>' for a in assumptions) or '<li>none stated</li>'}</ul>
<h4>Config</h4>{_config_table(config)}
</div>
<div>
<h4>Training curves</h4>{curves_svg(runs)}
<h4>Exact accuracy per true sum ({_e(row['split'])} split, mean over seeds)</h4>{per_sum_svg(runs, row['split'])}
<h4>Provenance</h4>{_provenance_table(runs)}
</div>
</div>
</details>"""


def _not_run_detail(gid: str, row: pd.Series) -> str:
    """The detail view of a recipe not run: its method, the report's claims, and what a seed would cost."""
    return f"""<details class="detail" id="{_id(gid, row['recipe'])}">
<summary><code>{_e(row['recipe'])}</code> — {_e(row['method'])} (not run)</summary>
<h4>Method</h4><p>{_e(row['method'])} (report {_e(row['report'])})</p>
<h4>Claimed by the report (course data, not measured here)</h4><p>{_e(row['claimed'] or 'none')}</p>
<h4>What a seed would cost</h4><p>{_e(row['not_run'])}</p>
</details>"""


def _config_table(config: dict) -> str:
    rows = []
    for key, value in config.items():
        if key in HIDDEN_CONFIG:
            continue
        shown = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
        rows.append(f"<tr><th>{_e(key)}</th><td>{_e(shown)}</td></tr>")
    return f'<table class="kv">{"".join(rows)}</table>'


def _provenance_table(runs: pd.DataFrame) -> str:
    def values(column: str) -> str:
        return joined(runs[column]) if column in runs else "—"

    versions = sorted(c for c in runs.columns if c.startswith("version_"))
    items = [
        ("seeds", ", ".join(str(s) for s in sorted(runs["seed"]))),
        ("git commit", values("git_commit") + (" (uncommitted changes)" if runs["git_dirty"].any() else "")),
        ("code version", values("code_version")),
        ("device", values("device")),
        ("dataset", values("dataset")),
        *[(c.removeprefix("version_"), values(c)) for c in versions],
        ("finished", f"{runs['finished'].min():%Y-%m-%d %H:%M} – {runs['finished'].max():%Y-%m-%d %H:%M} UTC"),
    ]
    return '<table class="kv">' + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in items) + "</table>"


# ----------------------------------------------------------------------------------------
# Helpers and the page template
# ----------------------------------------------------------------------------------------


def _id(gid: str, recipe: str) -> str:
    """An element id derived from the recipe's name (a hash): a name can hold any character, an id may not."""
    return f"{gid}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def _e(value) -> str:
    return html.escape(str(value), quote=True)


STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1500px;
       padding: 0 1.2em 3em; color: #1d2330; background: #fff; }
h1 { font-size: 1.6em; margin: 0.8em 0 0.2em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 2px solid #dde3ec; }
h3 { font-size: 1.05em; margin-top: 1.4em; } h4 { margin: 0.9em 0 0.3em; font-size: 0.95em; color: #394458; }
code { background: #f1f4f8; padding: 0 0.25em; border-radius: 3px; }
.note, .legend { color: #5a6475; font-size: 0.92em; }
.scroll { overflow-x: auto; }
table.sortable { border-collapse: collapse; font-size: 0.9em; white-space: nowrap; }
table.sortable th { background: #eef2f7; cursor: pointer; user-select: none; padding: 0.45em 0.6em; text-align: left;
                    border-bottom: 2px solid #c9d2df; position: sticky; top: 0;
                    white-space: normal; min-width: 3em; vertical-align: bottom; }
table.sortable th:hover { background: #dfe7f1; }
table.sortable th[aria-sort="ascending"]::after { content: " ▲"; }
table.sortable th[aria-sort="descending"]::after { content: " ▼"; }
table.sortable td { padding: 0.35em 0.6em; border-bottom: 1px solid #e7ebf1; }
table.sortable tbody tr:nth-child(even) { background: #fafbfd; }
table.sortable tbody tr:hover { background: #f2f6fc; }
table.compact [data-extra] { display: none; }
td.claim, td.not-run, td.verdict { white-space: normal; min-width: 9em; max-width: 15em; }
button.columns { font: inherit; cursor: pointer; }
td.claim, .claim-key { color: #8a5a00; font-style: italic; background: #fffaf0; }
td.claim .where { color: #a58a5a; font-size: 0.9em; }
.warn { color: #b3261e; font-size: 0.85em; }
button.open { border: none; background: none; color: #0b57d0; cursor: pointer; font: inherit; padding: 0;
              text-decoration: underline; font-family: ui-monospace, monospace; }
figure { margin: 1em 0; } img.plot { max-width: min(100%, 760px); height: auto; border: 1px solid #e7ebf1; }
figcaption { color: #5a6475; font-size: 0.9em; }
details.detail { border: 1px solid #dde3ec; border-radius: 6px; margin: 0.4em 0; padding: 0.3em 0.8em; }
details.detail[open] { background: #fbfcfe; box-shadow: 0 1px 4px rgba(0,0,0,0.08); }
details.detail summary { cursor: pointer; padding: 0.2em 0; }
.panes { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 440px); gap: 1.5em; }
table.kv { border-collapse: collapse; font-size: 0.88em; } table.kv th { text-align: left; padding: 0.15em 0.8em 0.15em 0;
           color: #394458; vertical-align: top; white-space: nowrap; } table.kv td { padding: 0.15em 0; word-break: break-word; }
svg.chart { font-size: 10px; fill: #394458; } svg.chart .frame { fill: none; stroke: #c9d2df; }
svg.chart .grid { stroke: #eef2f7; } svg.chart .bar { fill: #3b7dd8; } svg.chart .absent { fill: #c9d2df; }
"""

SCRIPT = """
// Sort a table by the clicked column: numbers as numbers, empty cells last; a second click reverses.
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("thead th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var ascending = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("thead th").forEach(function (other) { other.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var numeric = th.dataset.type === "num";
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
        if (x === "" || y === "") { return (x === "") - (y === ""); }
        var order = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
// The column toggle: the default view's columns, or every column.
document.querySelectorAll("button.columns").forEach(function (button) {
  var table = document.querySelector('table[data-table="' + button.dataset.table + '"]');
  var label = button.textContent;
  button.addEventListener("click", function () {
    var compact = table.classList.toggle("compact");
    button.textContent = compact ? label : "show the default columns";
  });
});
// A recipe's name opens its detail view (and a link to #<id> does too).
function openDetail(id) {
  var detail = document.getElementById(id);
  if (!detail) { return; }
  detail.open = true;
  detail.scrollIntoView({block: "start"});
}
document.querySelectorAll("button.open").forEach(function (button) {
  button.addEventListener("click", function () {
    history.replaceState(null, "", "#" + button.dataset.detail);
    openDetail(button.dataset.detail);
  });
});
if (location.hash) { openDetail(decodeURIComponent(location.hash.slice(1))); }
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>digitsum-bench leaderboard</title>
<style>{style}</style>
</head>
<body>
<h1>digitsum-bench leaderboard</h1>
<p>Methods of five course reports for one task - predict the sum (0..36) of four handwritten digits in a 40x168
image - retrained by this benchmark with fixed seeds. {n_tables} table(s), one per budget and dataset;
code version(s) {versions}. Also as <a href="leaderboard.md">markdown</a> and <a href="leaderboard.csv">CSV</a>.</p>
<p class="note">Exact accuracy is the mean over seeds ± the half-width of its 95% confidence interval (n/a with one
seed); other numbers are means over seeds. <em>vs best</em>: a Welch t-test over seeds against the top row (≈: not
significantly different). Cells in <span class="claim-key">italics on yellow</span> are the reports' own
<strong>claims</strong>, measured on the course data (not public) by their authors: not measurements of this
benchmark, and not on the dataset of the table. They stand only beside runs of the report's own budget (a capped
budget's table has none), each beside the measured number of its own split, and a pretrained method's claim only
beside runs that loaded ImageNet weights (else: <em>not comparable</em>). <em>epochs</em>: the run's of its
report's; <em>to 50% / to 90%</em>: epochs and training time until validation exact first reached it.
<em>seeds done/asked</em> counts finished runs; in the <code>full</code> table a recipe not run yet says what a seed
would cost where that was measured. Check-only budgets ({checks}) prove only that the code runs: they are not
results, and are listed, unranked, in the markdown alone.</p>
{sections}
<script>{script}</script>
</body>
</html>
"""
