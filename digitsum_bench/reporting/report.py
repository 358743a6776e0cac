"""The report: `leaderboard.csv`, `leaderboard.md`, the plots and the web page, written from the records.

Owns the markdown tables (one per budget and dataset, never mixed), the CSV, the comparison a
`run` prints, the README's result tables (`README_SECTIONS`), and writing all of it (`write_report`). Run writes records; report only reads
them (no training, no GPU), so everything here can be regenerated from `<results>/records/`.
The rows, cells and claims come from leaderboard.py, the plots from plots.py, the page from
page.py. The reports' claimed numbers are shown beside ours, always labelled as claims: they
were measured on the course data, not by this benchmark.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from ..claims import CLAIM_NAMES, PERCENT, claim_number
from ..errors import BenchError, printable
from ..registry.budgets import BUDGET_NAMES, CHECK_ONLY, budget_cap
from ..store import atomic_write, inside, read_estimates
from .leaderboard import (
    ALPHA,
    LEVELS,
    SAME,
    TABLE,
    board_runs,
    claim_cell,
    duration,
    epochs_cell,
    finite_note,
    fmt,
    joined,
    leaderboard,
    load_records,
    measured_cell,
    metric_columns,
    metric_header,
    time_to_cell,
    verdict,
    vs_best,
    weights_note,
)
from .page import render_page
from .plots import render_plots

LEGEND = f"""\
Exact accuracy is the mean over seeds ± the half-width of its 95% confidence interval
(t-distribution over seeds; n/a with one seed). Other numbers are means over seeds. Where some seeds
gave no finite value (a diverged run), mean and interval are of the others, and the cell says so
(`2 of 3 seeds: 1 not finite`).
*vs best*: `best` marks the top row; `{SAME}` marks a row whose difference from the best row
is not significant over seeds (Welch t-test, p ≥ {ALPHA}); `p=…` rows are significantly
worse; `untestable` means fewer than 2 seeds on one side, so the difference cannot be tested.
*Two MSEs*: exact, within-one, *MSE (rounded)* and MAE score the integer predicted sum (rounded
regression output, argmax or decoded digits). *MSE raw* scores the unrounded output: the
regression output itself, or the expected sum under a 37-way or digit head. The reports'
MSE claims are of the raw kind (report 002: its MAE x 6,000 is a whole number and its MSE is
not; report 004 quotes its MSE loss), so they stand beside *MSE raw*.
*per-digit %*: the fraction of the four digits read right, for recipes with a digit head on data
with digit labels; "—" for the others and for records made before it was measured.
*GFLOPs*: forward FLOPs per 40x168 image, counting 2 FLOPs per multiply-add. torchvision's
tables list multiply-adds: their 4.09 "GFLOPS" for ResNet-50 at 224x224 is 8.18 here.
*pretrained*: `imagenet` loaded ImageNet weights; `unavailable` means the report used them but
none were found, so the run trained from scratch.
*claim* columns: the reports' own numbers, each beside the measured metric of the same
definition on the same kind of split (a `val` claim beside this benchmark's val number: images
from the training pool; a `test` claim beside test: digits never seen in training); measured on
the course data (not public) - claims, not measurements of this benchmark, and not on the
dataset of the table. Only rows that trained their report's own budget (`epochs` run/report's,
members and data uncut) stand beside claims: a table of a capped budget shows none. A claim of a
method that started from ImageNet weights stands only beside runs that loaded them: where a run
trained from scratch (`unavailable`), its claim cells say `not comparable` instead; a recipe whose
seeds differ in the weights they loaded has a row for each, named after the recipe.
*to 50% / to 90%*: epochs and training time until validation exact first reached 50% / 90%
(mean over the seeds that reached it), from each run's per-epoch history, after a pre-training
stage's time where the record has it (its epochs at their median time); `never` if none did.
*train time*: a seed's training (a pre-training stage's too, where its record has it), every
epoch counted at the run's median epoch time, so that a machine paused or shared for a few
epochs does not inflate it (the records keep the wall time, `train_seconds`); mean over seeds.
*not run*: a recipe of the registry with no run in a `full` table, with its time per seed
estimated on each device from the training time per epoch measured in its own records there
(any budget but smoke), times its own epochs and members, or else from a CPU run's note of its
estimate (a few timed training steps, when `run` left it out at that budget); `time not
measured` names the devices with neither. Its cell gives the cheapest device's time; the list
under the table gives every device's."""


# ----------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------


def registry_facts() -> dict[str, dict]:
    """What the leaderboard needs of each registered recipe: its own epochs, members and training
    size (to tell a capped run from one of the report's budget), the epochs of a pre-training stage
    (they cost time too), report, method and claims."""
    from dataclasses import asdict

    from ..registry.recipes import get_recipe, list_recipes

    facts = {}
    for name in list_recipes():
        r = get_recipe(name)
        facts[name] = {"epochs": r.epochs, "members": r.members, "train_size": r.train_size,
                       "pretrain_epochs": r.pretrain.epochs if r.pretrain else 0, "report": r.report,
                       "method": r.method, "claimed": [asdict(c) for c in r.claimed]}
    return facts


def md(text: str) -> str:
    """Text from a record as markdown shows it, whatever it holds: no control character (a newline would end a
    table row), \\ ` [ ] | backslash-escaped (no code span, link or table cell of its own), < and > as entities
    (no HTML, no `<!--` comment, so never a README marker)."""
    escaped = re.sub(r"[\\`\[\]|]", r"\\\g<0>", printable(text))
    return escaped.replace("<", "&lt;").replace(">", "&gt;")


def markdown_safe(value: object) -> object:
    """`value` (the board, one of its cells, a claim or a note) with every string in it escaped by `md`: names,
    numbers and the cells' own words have nothing it changes."""
    if isinstance(value, pd.DataFrame):
        return value.assign(**{c: value[c].map(markdown_safe) for c in value.columns if value[c].dtype == object})
    if isinstance(value, str):
        return md(value)
    if isinstance(value, (list, tuple)):
        return [markdown_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: markdown_safe(v) for k, v in value.items()}
    return value


def markdown(board: pd.DataFrame, notes: list[dict] = ()) -> str:
    """The leaderboard as markdown: one table per (budget, dataset), never mixed.

    Under each table, the recipes left out on a CPU at that budget (`notes`, from
    store.read_estimates) with their estimated time. Check-only budgets come last, marked so, by name
    and with no rank or test against the best row: their accuracies are at chance.
    """
    board, notes = markdown_safe(board), [markdown_safe(n) for n in notes]
    parts = ["# digitsum-bench leaderboard", "", LEGEND]
    for (budget, dataset_id), table in sorted(board.groupby(TABLE), key=lambda kv: (_budget_order(kv[0][0]), kv[0][1])):
        parts += ["", _table_header(table), ""]
        if budget in CHECK_ONLY:
            parts += [f"*The `{budget}` budget only checks that every recipe runs end to end: its accuracies "
                      "mean nothing and are not results.*", ""]
            parts += [_markdown_table(_table_cells(table.sort_values("label")).drop(columns=["#", "vs best"]))]
        else:
            parts += [_markdown_table(_table_cells(table))]
        parts += _not_run_list(table)
        parts += _needs_gpu(notes, budget, dataset_id, set(table["recipe"]))
    return "\n".join(parts) + "\n"


def _budget_order(budget: str) -> int:
    """Tables in the order of budgets.BUDGET_NAMES (check-only budgets last); unknown budgets after them."""
    return BUDGET_NAMES.index(budget) if budget in BUDGET_NAMES else len(BUDGET_NAMES)


def _not_run_list(table: pd.DataFrame) -> list[str]:
    """Under a table, each recipe not run with what a seed would cost on every device (its cell says it in short)."""
    rows = table[table["not_run"] != ""]
    if rows.empty:
        return []
    return ["", "**Not run yet**, with what a seed would cost:", ""] + [
        f"- `{r['recipe']}`: {r['not_run'].removeprefix('not run: ')}" for _, r in rows.iterrows()]


def _needs_gpu(notes: list[dict], budget: str, dataset_id: str, measured: set[str]) -> list[str]:
    """Lines naming the recipes of this table left out on a CPU, with their estimated CPU time per seed."""
    left = [n for n in notes if n["budget"] == budget and n["dataset_id"] == dataset_id and n["recipe"] not in measured]
    if not left:
        return []
    lines = ["", f"**Needs a GPU at the `{budget}` budget** (not run on a CPU; estimated CPU time per seed):", ""]
    for n in sorted(left, key=lambda n: n["estimated_seconds"]):
        lines.append(f"- `{n['recipe']}`: about {duration(float(n['estimated_seconds']))} on {n.get('device', 'a CPU')}")
    return lines


def _table_header(table: pd.DataFrame) -> str:
    first = table.iloc[0]
    splits = set(table["split"])
    ranked = f"{splits.pop()} split" if len(splits) == 1 else "test split where measured, else val (marked)"
    ranked = "checks only: not ranked" if first["budget"] in CHECK_ONLY else f"ranked on {ranked}"
    cap = budget_cap(first["budget"])
    return (
        f"## budget `{first['budget']}`{f' ({cap})' if cap else ''} · dataset {first['dataset']} "
        f"(`{first['dataset_id']}`) · code version {joined(table['code_version'].replace('', pd.NA).dropna())} · "
        f"{ranked}"
    )


def _table_cells(table: pd.DataFrame) -> pd.DataFrame:
    """Formatted cells, one row per recipe, in leaderboard order; each claim beside its metric and split."""
    best = table.iloc[0]
    mixed = table["split"].nunique() > 1
    columns = metric_columns(table)
    rows = []
    for rank, (_, row) in enumerate(table.iterrows(), start=1):
        cells = {"#": rank if not row["not_run"] else "", "recipe": _recipe_cell(row), "report": row["report"]}
        for kind, metric, split in columns:
            header = metric_header(kind, metric, split)
            if kind == "measured":
                marked = mixed and metric == "exact" and split is None and not row["not_run"]
                cells[header] = measured_cell(row, metric, split) + (f" ({row['split']})" if marked else "")
            elif kind == "claim":
                cells[header] = claim_cell(row, metric, split)
            else:
                cells[header] = "best" if rank == 1 else vs_best(row, best)
        cells |= {
            "epochs": epochs_cell(row),
            **{f"to {level:.0%}": time_to_cell(row, level) for level in LEVELS},
            "GFLOPs (2/MAC)": fmt(row["gflops"], ".3g"),
            "params (M)": fmt(row["params_m"], ".3g"),
            "device": row["device"],
            "train time": row["train_time"],
            "seeds done/asked": f"{row['n_seeds']}/{row['seeds_requested']}" if not row["not_run"] else "0",
            "pretrained": row["pretrained"],
        }
        rows.append(cells)
    return pd.DataFrame(rows)


def _recipe_cell(row: pd.Series) -> str:
    """'`r003_resnet50_ema`', with its row's weights where its recipe has a row per weight status."""
    return f"`{row['recipe']}`{weights_note(row['weights'])}"


def _markdown_table(cells: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(cells.columns) + " |", "|" + "---|" * len(cells.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in cells.itertuples(index=False)]  # pipes: md()
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# The comparison a `run` prints
# ----------------------------------------------------------------------------------------


def comparison_table(results: Path, committed: Path, budget: str) -> str:
    """The runs in `results` at `budget` next to the committed leaderboard's rows of the same budget.

    Printed at the end of a `run` into a folder of one's own, so that a new user sees at once
    how their numbers compare with the ones shipped with the code.
    """
    mine = leaderboard(load_records(results))  # a user's own rows only: no registry rows
    mine = mine[mine["budget"] == budget].assign(where="this run")
    csv = Path(committed) / "leaderboard.csv"
    try:
        theirs = pd.read_csv(csv)
        theirs = theirs[(theirs["budget"] == budget) & (theirs["n_seeds"] > 0)].assign(where="committed")  # run rows only
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
        "train time": rows["train_seconds"].map(duration), "device": rows["device"].map(printable),
    })  # fmt: skip
    return (f"{budget} budget: this run next to the committed leaderboard ({csv})\n"
            + table.to_string(index=False))


# ----------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------


FORMULA = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet takes as the start of a formula (OWASP: CSV injection)


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with each text cell that a spreadsheet would run as a formula ('=HYPERLINK(...)') quoted by a
    leading `'`, as OWASP advises against CSV injection; numbers are left as they are."""
    def cell(value):
        return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA) else value

    return frame.assign(**{c: frame[c].map(cell) for c in frame.columns if frame[c].dtype == object})


def write_report(results: Path, out: Path | None = None, readme: Path | None = None) -> list[Path]:
    """Write `leaderboard.csv`, `leaderboard.md`, `plots/*.png` and the web page `index.html` (page.py)
    from the records under `results`, and the result tables of `readme` between its markers
    (`readme_text`; by default those of every file of `doc_files()`, the repository's README.md and
    docs/*.md, when `results` and `out` are its `results/`).

    Everything is rendered in memory first and each file is replaced atomically, so an error
    (a corrupt record, a failing plot) leaves the previous report as it was. Returns the paths.
    """
    results = Path(results)
    out = results if out is None else Path(out)
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out}: is a file; name a folder for the leaderboard and plots")
    records = load_records(results)
    notes = read_estimates(results)
    board = leaderboard(records, registry_facts(), notes)
    results_only = board[~board["budget"].isin(CHECK_ONLY)]  # a check-only budget's rows are not results
    csv = csv_safe(results_only.drop(columns=["claims", "label"])).to_csv(index=False).encode()
    files = {out / "leaderboard.csv": csv, out / "leaderboard.md": markdown(board, notes).encode()}
    plots = render_plots(records, board)
    files.update({out / "plots" / name: png for name, png in plots.items()})
    files[out / "index.html"] = render_page(records, board, plots).encode()
    committed = out.resolve() == results.resolve() == REPO_README.parent / "results"
    docs = [readme] if readme else doc_files() if committed else []  # the README and docs quote the committed board only
    for doc in (doc for doc in docs if doc.exists()):
        files[doc] = readme_text(doc.read_text(encoding="utf-8"), records, board).encode()
    for path in set(files) - set(docs):  # a folder linked out of `out` (plots/) is refused before any file is replaced
        inside(path.parent, out)
    for path, data in files.items():
        _write_atomic(path, data)
    return list(files)


# ----------------------------------------------------------------------------------------
# The README's result tables
# ----------------------------------------------------------------------------------------

REPO_README = Path(__file__).resolve().parents[2] / "README.md"  # digitsum_bench/reporting/report.py
BASELINES = REPO_README.parent / "results" / "baselines"  # the gate's files that README sections render


def doc_files() -> list[Path]:
    """The files whose `<!-- report:NAME -->` sections `report` rewrites: the README and each docs/*.md with a
    marker. Found from REPO_README when called, so that a copy of the README elsewhere (the tests') has its own."""
    docs = sorted((REPO_README.parent / "docs").glob("*.md"))
    return [REPO_README, *(doc for doc in docs if MARKER.search(doc.read_text(encoding="utf-8")))]


def _seed_list(seeds) -> str:
    """'0-4' for a run of seeds, '0, 2' otherwise."""
    seeds = sorted(int(s) for s in seeds)
    contiguous = seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2
    return f"{seeds[0]}-{seeds[-1]}" if contiguous else ", ".join(map(str, seeds))


def builtin_runs(records: pd.DataFrame, budget: str) -> pd.DataFrame:
    """The runs at `budget` that the README's sections quote: the leaderboard's (board_runs: the newest code
    version of each row), on the built-in data as it is now. A new generator version gives the built-in data a
    new dataset id (data.splits: "synth-" and a hash of the generator version, the digits and the data seed), so
    that is the synthetic id of the run that finished last. Oldest first; empty where there is none."""
    runs = board_runs(records[records["budget"] == budget])
    synth = runs[runs["dataset_id"].str.startswith("synth")].sort_values("finished")
    return synth[synth["dataset_id"] == synth["dataset_id"].iloc[-1]] if len(synth) else synth


def _quick_table(records: pd.DataFrame, board: pd.DataFrame) -> str:
    """The `quick` table: test exact mean and sd over seeds, the seeds and the device, per recipe."""
    runs = builtin_runs(records, "quick")
    rows = board[(board["budget"] == "quick") & (board["n_seeds"] > 0) & board["dataset_id"].isin(runs["dataset_id"])]
    lines = ["| recipe | test exact % (mean over seeds) | sd | seeds | device |", "|---|---|---|---|---|"]
    for _, r in rows.iterrows():
        mine = (runs["recipe"] == r["recipe"]) & (runs["weights"].map(md) == r["weights"])  # the board is md'd
        seeds = runs.loc[mine, "seed"]
        lines.append(f"| {_recipe_cell(r)} | {fmt(r['test_exact_mean'] * 100, '.1f')} | "
                     f"{fmt(r['test_exact_std'] * 100, '.1f')} | {_seed_list(seeds)} | {r['device']} |")
    return "\n".join(lines)


def _seed_table(records: pd.DataFrame, recipe: str, budget: str, lines: dict) -> str:
    """One column per seed of `recipe` at `budget` (builtin_runs); `lines` maps a row's label to a cell function
    of a record."""
    runs = builtin_runs(records, budget)
    runs = runs[runs["recipe"] == recipe].sort_values("seed")
    out = ["| seed | " + " | ".join(str(s) for s in runs["seed"]) + " |", "|---|" + "---|" * len(runs)]
    out += [f"| {label} | " + " | ".join(cell(r) for _, r in runs.iterrows()) + " |" for label, cell in lines.items()]
    return "\n".join(out)


def _members_mean(run: pd.Series) -> str:
    members = run["members"] if isinstance(run["members"], list) else []
    exact = [m["test"]["exact"] for m in members if m.get("test")]
    return fmt(sum(exact) / len(exact) * 100, ".2f") if exact else "—"


def _ours_quick(records: pd.DataFrame, board: pd.DataFrame) -> str:
    """`ours_digitsum` at the quick budget, seed by seed: test exact, training time, the run's time."""
    return _seed_table(records, "ours_digitsum", "quick", {
        "test exact %": lambda r: fmt(r["test_exact"] * 100, ".2f"),
        "train time": lambda r: duration(r["train_seconds"]),
        "run time (start to record)": lambda r: duration(r["wall_seconds"]),
    })  # fmt: skip


def _ours_full(records: pd.DataFrame, board: pd.DataFrame) -> str:
    """`ours_digitsum` at the full budget, seed by seed: the ensemble's test exact and its members' mean."""
    return _seed_table(records, "ours_digitsum", "full", {
        "test exact %, ensemble": lambda r: fmt(r["test_exact"] * 100, ".2f"),
        "its members alone, mean": _members_mean,
        "train time": lambda r: duration(r["train_seconds"]),
    })  # fmt: skip


def _answer(records: pd.DataFrame, board: pd.DataFrame) -> str:
    """The reports' own answer: each report method of the built-in data's `full` table (builtin_runs), a row
    each (one per weight status where its seeds differ in it), every claim beside the measured metric of the
    same definition on the same split (mean over the seeds done), or what the recipe would cost where it has no
    run at its own budget. Its first line names the dataset."""
    runs = builtin_runs(records, "full")
    full = board[(board["budget"] == "full") & (board["report"] != "ours")
                 & board["dataset_id"].isin(runs["dataset_id"])].sort_values(["recipe", "label"])  # fmt: skip
    lines = [f"On {md(runs['dataset'].iloc[-1])} (`{md(runs['dataset_id'].iloc[-1])}`):", ""] if len(runs) else []
    lines += ["| recipe | each claim: claimed → measured here (the claim against the seeds' 95% CI) | seeds done | device |",
              "|---|---|---|---|"]  # fmt: skip
    for _, r in full.iterrows():
        pairs = [f"{c['split']} {CLAIM_NAMES[c['metric']]}: {claim_number(c)} → "
                 + ("—" if r["not_run"] else measured_cell(r, c["metric"], c["split"], note=False).replace(" ± n/a", "")
                    + ("%" if c["metric"] in PERCENT else "") + finite_note(r, c["metric"], c["split"])
                    + f" ({verdict(r, c)})")
                 for c in r["claims"] if c["value"] is not None or not r["not_run"]]  # fmt: skip
        if r["not_run"]:
            pairs.append(r["not_run"])
        seeds = "0" if r["not_run"] else f"{int(r['n_seeds'])}/{int(r['seeds_requested'])}"
        lines.append(f"| {_recipe_cell(r)} | {'; '.join(pairs) or 'no number claimed'} | {seeds} | "
                     f"{'—' if r['not_run'] else r['device']} |")
    return "\n".join(lines)


def sabotage_table(found: dict) -> str:
    """sabotage.json as markdown: one table per device, each sabotage's numbers, those of a failed check in bold."""
    return "\n\n".join(_device_table(device, entry) for device, entry in found["devices"].items())


def _device_table(device: str, entry: dict) -> str:
    rows = [f"On {device}:", "",
            "| sabotage | recipe | test exact % (baseline) | final training loss (baseline) "
            "| checkpoint re-scored % (baseline) | fails on |", "|---|---|---|---|---|---|"]
    runs = [("none (the gate as CI runs it)", entry.get("clean", {}))]
    runs += [(s["what"], s.get("recipes", {})) for s in entry["sabotages"].values()]
    for what, recipes in runs:
        for recipe, now in recipes.items():
            ref = entry["baseline"][recipe]

            def cell(value: str, check: str, base: str) -> str:
                return f"**{value}** ({base})" if check in now["failed"] else f"{value} ({base})"

            exact = cell(f"{now['test_exact'] * 100:.2f}", "accuracy", f"{ref['test_exact'] * 100:.2f}")
            loss = cell(f"{now['train_loss']:.4f}", "training", f"{ref['train_loss']:.4f}")
            scored = cell(f"{now['rescored_exact'] * 100:.2f}", "scoring", f"{ref['test_exact'] * 100:.2f}")
            rows.append(f"| {what} | `{recipe}` | {exact} | {loss} | {scored} | "
                        f"{' and '.join(now['failed']) or 'nothing: the gate passes'} |")
    return "\n".join(rows)


def _sabotage(records: pd.DataFrame, board: pd.DataFrame) -> str:
    """The gate's sabotage tables, from results/baselines/sabotage.json (written by the gate's tests)."""
    return sabotage_table(json.loads((BASELINES / "sabotage.json").read_text(encoding="utf-8")))


def gate_table(baseline: dict) -> str:
    """The gate baseline's measurement (results/baselines/ci.json) as markdown: each seed's test exact and final
    training loss per thread count and per other machine, and the tolerances they give."""
    m = baseline["measurement"]
    rows = []
    for name, r in m["recipes"].items():
        runs = [(f"{m.get('machine', 'the baseline machine')}, {n} threads", r["test_exact_by_threads_and_seed"][n],
                 r["train_loss_by_threads_and_seed"][n]) for n in r["test_exact_by_threads_and_seed"]]
        runs += [(f"{machine}, 2 threads", found[name]["test_exact_by_seed"], found[name]["train_loss_by_seed"])
                 for machine, found in m.get("machines", {}).items() if name in found]
        rows += [f"| `{name}` | {where} | " + " | ".join(f"{exact[s] * 100:.2f} ({loss[s]:.4f})" for s in exact) + " |"
                 for where, exact, loss in runs]
    seeds = next(iter(next(iter(m["recipes"].values()))["test_exact_by_threads_and_seed"].values()))
    return "\n".join([f"Tolerance {baseline['tolerance'] * 100:.1f} points of test exact and {baseline['loss_tolerance']:.4f} "
                      "of the final training loss, from these runs: test exact % (final training loss) by seed.", "",
                      "| recipe | CPU (instruction set, precision), threads | " + " | ".join(f"seed {s}" for s in seeds)
                      + " |", "|---|---|" + "---|" * len(seeds), *rows])


def _gate(records: pd.DataFrame, board: pd.DataFrame) -> str:
    """The gate's measured tolerances, from results/baselines/ci.json (written by `gate --update`/`--add-machine`)."""
    return gate_table(json.loads((BASELINES / "ci.json").read_text(encoding="utf-8")))


def test_time_table(found: dict) -> str:
    """test-time.json (written by `pytest --save-test-time`) as markdown: the suite's time per CPU and command."""
    rows = ["| CPU (instruction set, precision) | threads | command | tests passed | time | slowest tests |",
            "|---|---|---|---|---|---|"]
    for run in found["runs"].values():
        slowest = "; ".join(f"{t['test'].split('::', 1)[-1]} {t['seconds']:.0f} s" for t in run["slowest"][:3])
        rows.append(f"| {run['cpu']} | {run['threads']} | `{run['command']}` | {run['passed']} | "
                    f"{run['seconds'] / 60:.1f} min | {slowest} |")
    if not found["runs"]:
        rows.append("| not measured yet: `pytest --save-test-time` on a quiet machine | | | | | |")
    return "\n".join(rows)


def _test_time(records: pd.DataFrame, board: pd.DataFrame) -> str:
    """How long the test suite took, from results/baselines/test-time.json."""
    path = BASELINES / TEST_TIME
    return test_time_table(json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"runs": {}})


# The README's generated sections: `<!-- report:NAME -->` ... `<!-- /report:NAME -->` hold
# README_SECTIONS[NAME](records, board). A new section is one function and one entry here.
README_SECTIONS = {"answer": _answer, "gate": _gate, "sabotage": _sabotage, "test-time": _test_time, "quick": _quick_table,
                   "ours-quick": _ours_quick, "ours-full": _ours_full}
TEST_TIME = "test-time.json"  # in results/baselines: what `pytest --save-test-time` measured
MARKER = re.compile(r"<!-- /?report:[\w-]+ -->")  # a section's opening or closing marker


def readme_text(text: str, records: pd.DataFrame, board: pd.DataFrame) -> str:
    """`text` with every marked section rewritten from the records; a marker with no section is an error."""

    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name not in README_SECTIONS:
            raise BenchError(f"README marker report:{name}: no such section; known: {', '.join(README_SECTIONS)}")
        return f"<!-- report:{name} -->\n{README_SECTIONS[name](records, board)}\n<!-- /report:{name} -->"

    board = markdown_safe(board)
    new = re.sub(r"<!-- report:([\w-]+) -->\n.*?<!-- /report:\1 -->", fill, text, flags=re.S)
    if MARKER.findall(new) != MARKER.findall(text):  # a marker added or lost would move the sections for good
        raise BenchError("README: the new sections would add or remove a `<!-- report:... -->` marker; "
                         "left as it was")
    return new


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename it over `path` in one step."""
    with atomic_write(path) as f:
        f.write(data)
