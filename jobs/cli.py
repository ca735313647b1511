"""The ``kiln`` command line: parse, build, run, report.

    kiln run   [CONFIG] [key=value ...]   data, training and evaluation (the main job)
    kiln data  [CONFIG] [key=value ...]   only the data side: a new dataset version
    kiln data refresh [CONFIG] [...]      add only new inputs, as a new version (scheduled)
    kiln data status  [CONFIG] [...]      the versions of the dataset, which is CURRENT
    kiln data verify  [VERSION] [...]     re-check a version's checksums (exit 1 on mismatch)
    kiln train [CONFIG] [key=value ...]   only training, on a dataset version
    kiln eval  CHECKPOINT                 score an exported checkpoint
    kiln export CHECKPOINT --out DIR      a Hugging Face Llama-format folder
    kiln report RUN                       a run as an HTML page with plots (no wandb needed)
    kiln submit [--address URL] -- ARGS   send `kiln ARGS` to a Ray cluster (Ray Jobs)
    kiln jobs list|status|logs|stop       the jobs on a Ray cluster

CONFIG defaults to jobs/configs/demo.yaml, which runs on the sample bundled in the repository.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path

__all__ = ["main"]

EXAMPLES = """examples:
  kiln run                                  the whole job on the bundled sample
  kiln run train.max_steps=50 --dry-run     print the resolved config, run nothing
  kiln run my-job.yaml train.zero_stage=3   your own job config, with an override
  kiln run --resume                         continue the newest unfinished run
  kiln data data.filter.languages=[en]      only build a dataset version
  kiln data refresh my-job.yaml             add only the inputs not seen before
  kiln data status                          versions of the dataset, with counts and parents
  kiln data verify v0002                    re-check a version's checksums
  kiln eval kiln-out/runs/<run>/train/final score a checkpoint
  kiln train train.launcher=torchrun       train under torchrun instead of Ray Train
  kiln export kiln-out/runs/<run>/train/final --out my-model   for transformers
  kiln report <run>                         kiln-out/runs/<run>/report/index.html
  kiln submit --address http://head:8265 -- run train.use_gpu=true   the main job on a cluster
"""


def _split_args(items: list[str]) -> tuple[str | None, list[str]]:
    """Separate an optional config path from key=value overrides."""
    config, overrides = None, []
    for item in items:
        if "=" in item and not item.endswith((".yaml", ".yml")):
            overrides.append(item)
        elif config is None:
            config = item
        else:
            raise SystemExit(f"kiln: unexpected argument {item!r} (overrides look like key=value)")
    return config, overrides


def _run_name(value: str) -> str:
    """argparse type: a run name is one folder under the output directory, never a path."""
    from pipeline.config import NAME_PATTERN

    if not re.fullmatch(NAME_PATTERN, value):
        raise argparse.ArgumentTypeError(
            f"{value!r}: use up to 128 letters, digits, '_', '.' and '-', not starting with '.'"
        )
    return value


def _add_job_arguments(p: argparse.ArgumentParser, *, resumable: bool = True) -> None:
    p.add_argument(
        "args",
        nargs="*",
        metavar="[CONFIG] [key=value]",
        help="a job config YAML (default: jobs/configs/demo.yaml) and dotted overrides such as "
        "train.max_steps=100 or data.filter.languages=[en,de]",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="validate and print the resolved config, then stop"
    )
    p.add_argument(
        "--run-name",
        type=_run_name,
        help="name of the run (default: <job name>-<date>-<time>); letters, digits, _ . -",
    )
    if resumable:
        p.add_argument(
            "--resume",
            action="store_true",
            help="continue the newest unfinished run of this job, or the --run-name run "
            "(started afresh when it does not exist yet, so a retried job can always pass it)",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiln",
        description="kiln turns web pages, WARC files and books into a deduplicated, versioned "
        "token dataset, pretrains a GPT on it with DeepSpeed ZeRO, and evaluates it.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging, Ray's included"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "run",
        help="the main job: data, training and evaluation",
        description="Run the whole job: read and clean the inputs into a new dataset version, "
        "train on it with DeepSpeed ZeRO under Ray Train, evaluate the result, and print where "
        "everything is with the ledger of kept and dropped documents.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_job_arguments(p)

    p = sub.add_parser(
        "data",
        help="only the data side: a new dataset version",
        description="Read, extract, filter, dedup, tokenize and shard into a new dataset version. "
        "`kiln data refresh|status|verify --help` explain the incremental refresh and the "
        "commands that look at versions.",
    )
    _add_job_arguments(p)

    p = sub.add_parser(
        "train",
        help="only training, on a dataset version",
        description="Train on a dataset version (default: the current version of "
        "data.dataset_name in the store) and export the final weights.",
    )
    _add_job_arguments(p)
    p.add_argument("--dataset", help="dataset version folder to train on")

    p = sub.add_parser(
        "eval",
        help="score an exported checkpoint",
        description="Validation loss (overall and per source), generation tests and suites, "
        "cloze and multiple-choice accuracy of a checkpoint; writes JSON and a Markdown report "
        "beside it. CHECKPOINT is the 'final' folder a training run exports.",
    )
    p.add_argument("checkpoint", help="exported checkpoint folder (<run>/train/final)")
    p.add_argument("--dataset", help="dataset version to score on (default: the one it trained on)")
    p.add_argument("--config", help="job config whose eval section to use (default: demo.yaml)")
    p.add_argument("--out", help="where to write the JSON (default: <checkpoint>/eval.json)")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="overrides, e.g. eval.max_new_tokens=20"
    )

    p = sub.add_parser(
        "export",
        help="write a checkpoint as a Hugging Face Llama folder",
        description="Write an exported checkpoint as a Hugging Face Llama-format folder "
        "(config.json, model.safetensors, tokenizer files) that transformers' "
        "AutoModelForCausalLM and AutoTokenizer load.",
    )
    p.add_argument("checkpoint", help="exported checkpoint folder (<run>/train/final)")
    p.add_argument("--out", required=True, help="folder to write (replaced if it exists)")
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default="float32",
        help="weight type in model.safetensors (default: float32, as trained)",
    )
    _add_report_parser(sub)
    from jobs.cluster import add_cluster_parsers

    add_cluster_parsers(sub)
    return parser


def _add_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="render a run as an HTML page with plots",
        description="Write <run>/report/index.html with PNG plots (loss, learning rate, "
        "tokens/s, drops by reason, evaluation scores) and the ledger, from the files the run "
        "wrote. Needs no wandb account.",
    )
    p.add_argument("run", help="run name under <output-dir>/runs, or a run folder")
    p.add_argument(
        "--output-dir", default="kiln-out", help="the job's output_dir (default: kiln-out)"
    )
    p.add_argument("--out", help="folder to write the report to (default: <run>/report)")


def _report(args: argparse.Namespace) -> int:
    from jobs.report import ReportError, build_report

    try:
        index = build_report(args.run, output_dir=args.output_dir, out=args.out)
    except ReportError as exc:
        print(f"kiln: {exc}", file=sys.stderr)
        return 2
    print(f"report written to {os.path.relpath(index)}")
    return 0


DATA_ACTIONS = ("refresh", "status", "verify")


def build_data_parser(action: str) -> argparse.ArgumentParser:
    """Parser of `kiln data refresh|status|verify`."""
    if action == "refresh":
        p = argparse.ArgumentParser(
            prog="kiln data refresh",
            description="Add only the inputs the current version has not seen (same path and "
            "sha256, or same URL and ETag) as a new dataset version: their documents are deduplicated "
            "against every earlier version, tokenized with the dataset's tokenizer, and their "
            "shards added to the parent's. Nothing new: no version is committed and the exit "
            "status is 0. Safe to kill and rerun; two refreshes of one dataset never overlap "
            "(the second exits with status 3). With no version yet, builds the first.",
        )
        _add_job_arguments(p, resumable=False)
        return p
    p = argparse.ArgumentParser(
        prog=f"kiln data {action}",
        description="List the versions of the job's dataset (data.dataset_name in "
        "output_dir/store) with counts, dates and parents, marking CURRENT."
        if action == "status"
        else "Re-check a version's shards (sha256 and size), tokenizer file and dedup keys "
        "against its manifest. Exits 1 when anything differs.",
    )
    p.add_argument(
        "args",
        nargs="*",
        metavar="[VERSION] [CONFIG] [key=value]" if action == "verify" else "[CONFIG] [key=value]",
        help=(
            "VERSION: vNNNN or a version folder (default: CURRENT); " if action == "verify" else ""
        )
        + "a job config YAML (default: jobs/configs/demo.yaml) and dotted overrides",
    )
    if action == "verify":
        p.add_argument("--all", action="store_true", help="verify every version of the dataset")
    else:
        p.add_argument("--json", action="store_true", help="print the rows as JSON")
    return p


def _data_action(action: str, argv: list[str]) -> int:
    from jobs.config import load_job_config
    from jobs.run import RunPaths

    args = build_data_parser(action).parse_args(argv)
    items = list(args.args)
    version_arg = None
    if action == "verify":
        for item in items:
            if re.fullmatch(r"v\d{4,}", item) or (Path(item) / "manifest.json").is_file():
                version_arg = item
                items.remove(item)
                break
    config_path, overrides = _split_args(items)
    cfg = load_job_config(config_path, overrides)
    if action == "refresh":
        if args.dry_run:
            from jobs.run import RunPaths
            from pipeline.refresh import check_refresh

            print(json.dumps(cfg.model_dump(), indent=2))
            parent = check_refresh(cfg.data, RunPaths(cfg, "status").store)
            print(  # stderr: stdout stays the config alone, as JSON
                f"kiln data refresh --dry-run: would add new inputs to {parent}"
                if parent
                else f"kiln data refresh --dry-run: no version of {cfg.data.dataset_name!r} "
                "yet; would build the first from every input",
                file=sys.stderr,
            )
            return 0
        return _refresh(cfg, args.run_name)
    paths = RunPaths(cfg, "status")
    store, name = paths.store, cfg.data.dataset_name
    if action == "status":
        from pipeline.versions import format_status, version_rows

        rows = version_rows(store, name)
        print(json.dumps(rows, indent=2) if args.json else format_status(store, name, rows))
        return 0
    from pipeline.versions import check_version

    if args.all:
        targets = [store.dataset_dir(name) / v for v in store.versions(name)]
    elif version_arg is not None and re.fullmatch(r"v\d{4,}", version_arg):
        targets = [store.dataset_dir(name) / version_arg]
    elif version_arg is not None:
        targets = [Path(version_arg)]
    else:
        current = store.current_version(name)
        targets = [current] if current is not None else []
    if not targets:
        raise FileNotFoundError(f"dataset {name!r} in {store.root} has no version to verify")
    failed = 0
    for target in targets:
        problems = check_version(store, target)
        if problems:
            failed += 1
            print(f"{target}: {len(problems)} problem(s)")
            for problem in problems:
                print(f"  {problem}")
        else:
            print(f"{target}: ok (every checksum matches its manifest)")
    return 1 if failed else 0


def _refresh(cfg, run_name: str | None) -> int:
    from jobs.run import RunPaths, connect_ray, new_run_name
    from pipeline.refresh import refresh

    run = run_name or new_run_name(f"{cfg.name}-refresh")
    paths = RunPaths(cfg, run)
    result = refresh(cfg.data, paths.store, run, connect=lambda: connect_ray(cfg))
    print(f"kiln data refresh: {result.message}")
    print(
        f"  inputs           {result.inputs_total} listed, {result.inputs_new} new, "
        f"{result.inputs_total - result.inputs_new} seen before"
    )
    if result.committed:
        added = result.added
        where = str(result.version_dir)
        if where.startswith(os.getcwd() + os.sep):
            where = os.path.relpath(where)
        print(f"  dataset version  {where}  (parent {result.parent})")
        if "train" in added:
            print(
                f"  added            train {added['train']['tokens']:,} tokens / "
                f"{added['train']['documents']} docs, val {added['val']['tokens']:,} tokens / "
                f"{added['val']['documents']} docs"
            )
        if result.stats.get("dedup"):
            print(
                "  duplicates of earlier versions  "
                f"{result.stats['dedup'].get('duplicates_of_earlier_versions', 0)}"
            )
        if result.ledger is not None:
            print("ledger of the new inputs:")
            print("\n".join("  " + line for line in result.ledger.format().splitlines()))
    return 0


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not verbose:
        for noisy in ("urllib3", "filelock", "trafilatura", "htmldate", "courlan"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `kiln data refresh|status|verify` have their own parsers: `kiln data`'s positional
    # CONFIG and overrides would otherwise swallow the action's name.
    verbose = "-v" in argv or "--verbose" in argv
    rest = [a for a in argv if a not in ("-v", "--verbose")]
    if len(rest) >= 2 and rest[0] == "data" and rest[1] in DATA_ACTIONS:
        _configure_logging(verbose)
        from jobs.config import ConfigError
        from pipeline.errors import InputError
        from pipeline.store import StoreLockedError

        try:
            return _data_action(rest[1], rest[2:])
        except StoreLockedError as exc:
            print(f"kiln: {exc}", file=sys.stderr)
            return 3
        except (ConfigError, InputError, FileNotFoundError) as exc:
            print(f"kiln: {exc}", file=sys.stderr)
            return 2
    parser = build_parser()
    # Positionals may come after options (`kiln train --dataset D key=value`); argparse leaves
    # those over, so collect them here rather than reject them.
    args, extra = parser.parse_known_args(argv)
    if args.command in ("report", "submit", "jobs"):
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        _configure_logging(args.verbose)
        if args.command == "report":
            return _report(args)
        from jobs.cluster import run_cluster_command

        return run_cluster_command(args)
    unknown = [e for e in extra if e.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        (args.overrides if args.command == "eval" else args.args).extend(extra)
    if args.command is None:
        parser.print_help()
        return 2
    _configure_logging(args.verbose)
    from model.ds_ops import use_private_extensions_dir

    use_private_extensions_dir()  # before Ray starts, so every worker inherits it
    from jobs.run import interactive_terminal

    if not interactive_terminal():
        # tqdm bars (checkpoint loading, downloads) in workers and launchers: none in CI logs.
        os.environ.setdefault("TQDM_DISABLE", "1")

    from jobs.config import ConfigError, load_job_config
    from jobs.launch import TrainingFailedError
    from model.checkpoint import CheckpointError
    from model.suites import SuiteError
    from pipeline.errors import InputError

    try:
        if args.command == "eval":
            return _eval(args)
        if args.command == "export":
            from model.hf_export import export_hf

            out = export_hf(args.checkpoint, args.out, dtype=args.dtype)
            print(f"Llama-format folder written to {os.path.relpath(out)}")
            return 0
        config_path, overrides = _split_args(args.args)
        cfg = load_job_config(config_path, overrides)
        if args.dry_run:
            print(json.dumps(cfg.model_dump(), indent=2))
            return 0
        from jobs.run import format_summary, run_job

        steps = {"run": ("data", "train", "eval"), "data": ("data",), "train": ("train",)}[
            args.command
        ]
        state = run_job(
            cfg,
            run_name=args.run_name,
            resume=args.resume,
            steps=steps,
            dataset_dir=getattr(args, "dataset", None),
        )
        print(format_summary(state))
        return 0
    except (ConfigError, InputError, CheckpointError, SuiteError, FileNotFoundError) as exc:
        logging.getLogger("kiln").debug("where it failed", exc_info=True)  # -v shows it
        print(f"kiln: {exc}", file=sys.stderr)
        return 2
    except TrainingFailedError as exc:
        print(f"kiln: {exc}", file=sys.stderr)
        return 1


def _eval(args) -> int:
    from jobs.config import load_job_config
    from model.evaluate import evaluate, format_report
    from pipeline.store import atomic_write_json, atomic_write_text

    cfg = load_job_config(args.config, list(args.overrides))
    results = evaluate(args.checkpoint, args.dataset, cfg.eval.model_dump())
    out = Path(args.out) if args.out else Path(args.checkpoint) / "eval.json"
    atomic_write_json(out, results)
    report = out.with_suffix(".md")
    atomic_write_text(report, format_report(results))
    v, g, c = results["validation"], results["generation"], results["cloze"]
    print(
        f"checkpoint {results['checkpoint']} (run {results['training_run']}, dataset "
        f"{results['dataset']['version']} at {results['dataset']['dir']})"
    )
    print(f"val loss {v['loss']:.4f} (perplexity {v['perplexity']:.1f}) on {v['tokens']:,} tokens")
    for source, s in results["validation_by_source"]["by_source"].items():
        print(f"  {source}: loss {s['loss']:.4f} (perplexity {s['perplexity']:.1f})")
    print(f"generation tests {g['passed']}/{g['total']} passed")
    for name, s in results["suites"].items():
        print(f"suite {name}: {s['passed']}/{s['total']} passed")
    if c.get("accuracy") is not None:
        print(f"cloze {c['accuracy']:.1%} on {c['items']} items (chance {c['chance']:.1%})")
    for name, m in results["multiple_choice"].items():
        if m["accuracy"] is None:
            print(f"{name}: no item fits the model's context")
            continue
        print(
            f"{name}: {m['accuracy']:.1%} summed, {m['accuracy_norm']:.1%} per byte on "
            f"{m['items']} items (chance {m['chance']:.0%})"
        )
    print(f"results written to {os.path.relpath(out)}, report {os.path.relpath(report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
