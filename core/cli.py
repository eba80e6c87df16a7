"""The `d3m` command: the same job calls as the dashboard, with progress bars.

    d3m pipeline [--data DIR] [--workdir DIR] [--method d3m|auto-d3m|random|jtt|dfr|...] [--k N] ...
    d3m analyze | debias | runs | show RUN | export RUN --out FILE | cancel RUN | resume RUN | validate
    d3m import waterbirds --src DIR | d3m import celeba --src DIR --target T --spurious S [--age-subsample]
    d3m ablate STUDY.toml [--workdir DIR] [--ray ADDRESS] | d3m ablate --plan STUDY.toml
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tqdm import tqdm

from core.runs import jobs
from core.attribution.gradients import FEATURIZERS
from core.pipeline.analysis import start_analysis
from core.config import DEFAULT_DATA, AnalysisConfig, TrainConfig, TrakConfig, analysis_config
from core.data import command as data_command
from core.errors import DatasetError
from core.pipeline.preflight import check_analysis, check_params
from core.errors import check_workdir, describe
from core.pipeline.debias import start_debias
from core.methods import DEFAULT_METHOD, METHODS, get_method
from core.methods.base import COMMON_PARAMS
from core.methods.options import Option
from core.methods.selection import default_k, parse_k_sweep
from core.progress import progress_text
from core.runs.store import Run, RunStore
from core.studies import command as studies_command
from core.train import command as model_command
from core.views.summary import pipeline_summary, runs_frame



def config_from_args(args: argparse.Namespace) -> AnalysisConfig:
    return analysis_config(args.data, args.group_attribute, **model_command.model_settings(args),
                           epochs=args.epochs, seed=args.seed, device=args.device, n_models=args.models,
                           proj_dim=args.proj_dim, projector=args.projector, scope=args.scope,
                           proxy_width=args.proxy_width)


def find_or_start_analysis(store: RunStore, cfg: AnalysisConfig, members: str = "serial") -> Run:
    """Reuse a finished analysis with the same config (a restart loses nothing), resume one
    that died, else run one (its ensemble members serially or as Ray tasks); settings and
    dataset (every image) are checked before any run folder is created."""
    run = start_analysis(store, cfg, target=studies_command.analysis_target(members))
    if run.status().get("state") == "done":
        print(f"reusing analysis {run.id}", file=sys.stderr)
        return run
    if run.status().get("resumed"):
        print(f"resuming analysis {run.id} from its last finished stage", file=sys.stderr)
    return follow(run)


def follow(run: Run) -> Run:
    """Wait for a job with a progress bar; Ctrl-C cancels it. Raises if it did not finish.

    The bar shows the current stage's percent and its counts with their unit
    ('analysis ERM training: 63/756 steps  8%|#   | 00:12'), and the time since it started."""
    bar = tqdm(total=100, file=sys.stderr, leave=False, dynamic_ncols=True,
               bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}")
    shown = {}

    def show(status: dict) -> None:
        stage = status.get("stage") or status.get("state") or ""
        desc = f"{run.kind} {progress_text(stage, int(status.get('done') or 0), int(status.get('total') or 0))}"
        n = round(100 * float(status.get("fraction") or 0.0), 1)
        if shown != {"desc": desc, "n": n}:
            shown.update(desc=desc, n=n)
            bar.set_description_str(desc)
            bar.n = n
            bar.refresh()

    try:
        final = jobs.wait(run, on_status=show)
    except KeyboardInterrupt:
        final = jobs.cancel(run)
    finally:
        bar.close()
    if final["state"] != "done":
        raise SystemExit(f"{run.kind} run {run.id} {final['state']}: {final.get('error') or ''}\n"
                         f"(log: {run.path / 'log.txt'})")
    return run


def cmd_pipeline(args: argparse.Namespace) -> None:
    store = RunStore(args.workdir)
    method = args.method.replace("-", "_")
    params = method_params(args)
    get_method(method).resolve(params)  # an option outside its domain fails before any image is read,
    cfg = config_from_args(args)
    data = check_analysis(cfg, store.workdir / "cache")  # a bad k or image fails now,
    check_params(method, params, len(data.idx("train")), data.idx("train"))  # not after the analysis
    analysis = find_or_start_analysis(store, cfg, args.members)
    if get_method(method).control and args.k is None:  # the control alone: as many as D3M's default
        params["k"] = default_k(analysis.read_array(get_method(method).alignment))
    run = follow_debias(store, analysis.id, method, params)
    print(json.dumps(pipeline_summary(store, run)))


def method_params(args: argparse.Namespace) -> dict:
    params = {"seed": args.seed} | ({"k": args.k} if args.k is not None else {})
    if args.k_sweep:
        params["k_sweep"] = parse_k_sweep(args.k_sweep)
    return params | dict(args.param)


def name_value(text: str) -> tuple[str, str]:
    """'upweight=50' -> ('upweight', '50'); the method converts the value to its option's type."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value.strip()


def follow_debias(store: RunStore, analysis_id: str, method: str, params: dict) -> Run:
    return follow(start_debias(store, analysis_id, method, params))


def cmd_analyze(args: argparse.Namespace) -> None:
    run = find_or_start_analysis(RunStore(args.workdir), config_from_args(args), args.members)
    print(run.id)


def cmd_debias(args: argparse.Namespace) -> None:
    store = RunStore(args.workdir)
    run = follow_debias(store, args.analysis, args.method.replace("-", "_"), method_params(args))
    print(json.dumps(pipeline_summary(store, run)))


def cmd_runs(args: argparse.Namespace) -> None:
    frame = runs_frame(RunStore(args.workdir))
    print(frame.to_string(index=False) if len(frame) else f"no runs in {args.workdir}")


def cmd_show(args: argparse.Namespace) -> None:
    run = RunStore(args.workdir).get(args.run)
    out = {"id": run.id, "kind": run.kind, "parent": run.parent, "label": run.label,
           "status": run.status(), "config": run.config()}
    if run.has("metrics.json"):
        out["metrics"] = run.read_json("metrics")
    print(json.dumps(out, indent=2, default=str))


def cmd_export(args: argparse.Namespace) -> None:
    run = RunStore(args.workdir).get(args.run)
    if not run.has("removed.csv"):
        raise SystemExit(f"run {run.id} has no removed examples (is it a finished debias run?)")
    Path(args.out).write_bytes(run.file("removed.csv").read_bytes())
    print(f"wrote {args.out}")


def cmd_resume(args: argparse.Namespace) -> None:
    """Resume a failed, cancelled or dead run from its last finished stage and follow it."""
    store = RunStore(args.workdir)
    run = follow(jobs.resume(store.get(args.run)))
    print(json.dumps(pipeline_summary(store, run)) if run.kind == "debias" else run.id)


def cmd_cancel(args: argparse.Namespace) -> None:
    print(jobs.cancel(RunStore(args.workdir).get(args.run))["state"])


def cmd_methods(args: argparse.Namespace) -> None:
    """Each method, then each of its options: NAME=DEFAULT, what is allowed, what it sets."""
    for m in METHODS.values():
        print(f"{m.name:15s} {m.title} (group labels train/val: {m.group_info}; trains on: {m.trains_on})")
        for name, option in m.options.items():
            print(option_line(name, option))
    print("every method also takes (default: the analysis's):")
    for name, option in COMMON_PARAMS.items():
        print(option_line(name, option, default=False))


def option_line(name: str, option: Option, default: bool = True) -> str:
    """'    q=0.7                 a number in (0, 1]; q of the biased model's ...'."""
    value = option.default
    shown = ",".join(f"{v:g}" for v in value) if isinstance(value, list) else value
    head = f"{name}={shown}" if default else name
    return f"    {head:22s} {option.allowed()}" + (f"; {option.help}" if option.help else "")


def method_choices() -> list[str]:
    """Every registered method, spelled with _ or -."""
    return sorted(set(METHODS) | {name.replace("_", "-") for name in METHODS})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="d3m", description="Data debiasing with D3M / Auto-D3M and TRAK.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or D3M_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    add_job_commands(sub)
    add_run_commands(sub)
    data_command.add_parser(sub)
    model_command.add_parser(sub)
    studies_command.add_parser(sub)
    return parser


def workdir_opt(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--workdir", default="workdir", help="where runs are stored (default: ./workdir)")
    return p


def data_opts(p: argparse.ArgumentParser) -> None:
    t = TrakConfig()
    p.add_argument("--data", default=DEFAULT_DATA, help="dataset folder with metadata.csv (default: sample_data/)")
    p.add_argument("--group-attribute", default=None, help="groups = (label, this attribute) when no group column")
    model_command.add_model_opts(p)
    p.add_argument("--models", type=int, default=None, help=f"ensemble size T (default {t.n_models})")
    p.add_argument("--epochs", type=int, default=None, help=f"epochs (default {TrainConfig().epochs})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--proj-dim", type=int, default=t.proj_dim)
    p.add_argument("--projector", default=t.projector, choices=list(FEATURIZERS))
    p.add_argument("--scope", default=t.scope, help="gradient scope: auto (last below 10,000 train examples, else last:3) | all | last | last:N")
    p.add_argument("--proxy-width", type=int, default=t.proxy_width,
                   help="ensemble members at 1/W of the channel width (small_cnn; 1 = same model)")
    p.add_argument("--members", default="serial", choices=["serial", "ray"],
                   help="train the ensemble members one by one (default) or as Ray tasks")


def method_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default=DEFAULT_METHOD, choices=method_choices())
    p.add_argument("--k", type=int, default=None, help="examples to remove (default: all with A_i < 0)")
    p.add_argument("--k-sweep", default=None, help="comma-separated k's: keep the best validation WGA")
    p.add_argument("--param", type=name_value, action="append", default=[], metavar="NAME=VALUE",
                   help="a method option, e.g. upweight=50 (jtt), eta=0.1 (groupdro), c_grid=1,0.1 (dfr); "
                        "`d3m methods` lists them")


def add_job_commands(sub: argparse._SubParsersAction) -> None:
    """pipeline, analyze, debias, methods."""
    p = workdir_opt(sub.add_parser("pipeline", help="ERM, attribution, selection, retraining and the random control"))
    data_opts(p)
    method_opts(p)
    p.set_defaults(func=cmd_pipeline)
    p = workdir_opt(sub.add_parser("analyze", help="ERM + TRAK ensemble only; prints the analysis run id"))
    data_opts(p)
    p.set_defaults(func=cmd_analyze)
    p = workdir_opt(sub.add_parser("debias", help="run one method on a finished analysis"))
    p.add_argument("--analysis", required=True)
    method_opts(p)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_debias)
    sub.add_parser("methods", help="list the methods and their options (--param NAME=VALUE)").set_defaults(
        func=cmd_methods)


def add_run_commands(sub: argparse._SubParsersAction) -> None:
    """runs, show, cancel, resume, export."""
    workdir_opt(sub.add_parser("runs", help="list runs")).set_defaults(func=cmd_runs)
    for name, func, hlp in (("show", cmd_show, "show a run's config, status and metrics"),
                            ("cancel", cmd_cancel, "cancel a running job"),
                            ("resume", cmd_resume, "resume a failed, cancelled or dead run from its last "
                                                   "finished stage")):
        p = workdir_opt(sub.add_parser(name, help=hlp))
        p.add_argument("run")
        p.set_defaults(func=func)
    p = workdir_opt(sub.add_parser("export", help="write a run's removed examples to CSV"))
    p.add_argument("run")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_export)


WRITES = {"pipeline", "analyze", "debias", "resume", "cancel"}  # commands that write into the workdir


def main(argv: list[str] | None = None) -> None:
    """Run a command; any error is one line on stderr (exit 1), the traceback only with
    --debug or D3M_DEBUG=1; a closed pipe (`d3m runs | head`) ends quietly."""
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("D3M_DEBUG", "") not in ("", "0")
    try:
        if hasattr(args, "workdir"):
            check_workdir(args.workdir, write=args.command in WRITES)
        args.func(args)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:
        if debug:
            raise
        nothing = "\nnothing was run" if isinstance(exc, DatasetError) else ""
        raise SystemExit(f"error: {describe(exc)}{nothing}") from None


if __name__ == "__main__":
    main()
