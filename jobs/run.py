"""The main job: data, then training, then evaluation, as one resumable run.

A run has a name (``<job>-<date>-<time>`` by default) and a folder ``<output_dir>/runs/<name>``
holding ``state.json``, which records each finished step. ``kiln run --resume`` skips the
finished steps of the newest unfinished run (or of ``--run-name``, which is started afresh if it
does not exist yet, so that a retried job can always pass ``--resume``); an interrupted training
step resumes from its last DeepSpeed checkpoint.

Outputs::

    <output_dir>/store/                 dataset store (pipeline/store.py)
    <output_dir>/runs/<name>/state.json steps done and where their outputs are
    <output_dir>/runs/<name>/train/     checkpoints, final weights, train_log.jsonl
    <output_dir>/runs/<name>/eval.json  evaluation results
    <output_dir>/wandb/                 wandb runs (offline unless a key is set)
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from pathlib import Path

from jobs.config import ConfigError, JobConfig
from jobs.tracking import resolve_mode, start_run
from pipeline.store import DatasetStore, atomic_write_json

__all__ = ["STEPS", "RunPaths", "connect_ray", "interactive_terminal", "new_run_name", "run_job"]

log = logging.getLogger("kiln")

STEPS = ("data", "train", "eval")


class RunPaths:
    """Where one run's outputs go."""

    def __init__(self, cfg: JobConfig, name: str):
        self.name = name
        self.output = Path(cfg.output_dir).resolve()
        self.store = DatasetStore(self.output / "store")
        self.run_dir = self.output / "runs" / name
        self.state = self.run_dir / "state.json"
        self.train_dir = self.run_dir / "train"
        self.eval_json = self.run_dir / "eval.json"
        self.wandb_dir = self.output / "wandb"
        self.ray_storage = self.output / "ray"

    def load_state(self) -> dict:
        return json.loads(self.state.read_text()) if self.state.exists() else {"steps": {}}

    def save_state(self, state: dict) -> None:
        atomic_write_json(self.state, state)


def interactive_terminal() -> bool:
    """True when a person is watching: stderr is a terminal and this is not CI."""
    return sys.stderr.isatty() and not os.environ.get("CI")


def new_run_name(job_name: str) -> str:
    return f"{job_name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def latest_unfinished_run(cfg: JobConfig, steps: tuple[str, ...]) -> str | None:
    """The newest run of this job and command (same steps) that did not finish."""
    runs = Path(cfg.output_dir) / "runs"
    if not runs.is_dir():
        return None
    candidates = []
    for state_path in runs.glob("*/state.json"):
        state = json.loads(state_path.read_text())
        if (
            state.get("job") == cfg.name
            and tuple(state.get("steps_requested", ())) == tuple(steps)
            and not state.get("finished")
        ):
            candidates.append((state_path.stat().st_mtime, state_path.parent.name))
    return max(candidates)[1] if candidates else None


def connect_ray(cfg: JobConfig) -> int:
    """Start or join Ray; return how many CPUs the cluster has (for stage parallelism)."""
    import ray

    if not ray.is_initialized():
        import ray.data  # configures Ray Data's loggers on import; adjust them afterwards

        # Ray Data logs a progress report per operator at INFO; kiln keeps the console to its own
        # summary unless the user asked for detail (-v).
        if not log.isEnabledFor(logging.DEBUG):
            logging.getLogger("ray.data").setLevel(logging.WARNING)
            logging.getLogger("ray.train").setLevel(logging.WARNING)
        # Under `ray job submit` (or a KubeRay RayJob) RAY_ADDRESS names the cluster the job
        # belongs to, and ray.init joins it; num_cpus is only for a local instance kiln starts.
        # Otherwise "local": a new instance of kiln's own, even where a `ray start` cluster runs
        # on this machine (ray.init would join that one and refuse num_cpus).
        joining = cfg.ray.address is not None or bool(os.environ.get("RAY_ADDRESS"))
        ray.init(
            address=cfg.ray.address if joining else "local",
            num_cpus=None if joining else cfg.ray.num_cpus,
            logging_level=logging.WARNING,
        )
        ctx = ray.data.DataContext.get_current()
        # Ray Data's progress bars are for a person at a terminal; CI logs get one line a stage.
        ctx.enable_progress_bars = interactive_terminal()
        ctx.execution_options.preserve_order = True  # same input, same shard order
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _data_step(cfg: JobConfig, paths: RunPaths) -> dict:
    from pipeline.runner import run_data

    cpus = connect_ray(cfg)
    result = run_data(cfg.data, paths.store, paths.name, concurrency=cpus)
    tracker = start_run(
        cfg.wandb.model_dump(),
        name=f"{paths.name}-data",
        job_type="data",
        directory=paths.wandb_dir,
        config={"data": cfg.data.model_dump()},
        group=paths.name,
    )
    ledger = result.ledger
    tracker.summary(
        {
            "documents_in": ledger.documents_in,
            "documents_kept": ledger.documents_kept,
            "documents_dropped": ledger.documents_dropped,
            "dataset_version": result.version,
            **{f"split_{k}": v for k, v in result.stats["splits"].items()},
            **{f"crawl_{k}": v for k, v in result.stats.get("crawl", {}).get("pages", {}).items()},
            **{f"read_{k}": v for k, v in result.stats["read"].items()},
        }
    )
    tracker.table(
        "ledger",
        ["stage", "reason", "documents"],
        [[s, r, n] for s, reasons in ledger.dropped.items() for r, n in reasons.items()]
        + [["(kept)", "", ledger.documents_kept]],
    )
    # Per stage in/kept/dropped and drops by reason as numbers too, so runs can be compared.
    tracker.summary(
        {
            f"ledger/{s['stage']}/{key}": value
            for s in ledger.per_stage()
            for key, value in [
                ("in", s["in"]),
                ("kept", s["kept"]),
                ("dropped", s["dropped"]),
                *((f"dropped:{r}", n) for r, n in s["reasons"].items()),
            ]
        }
        | {f"counters/{k}": v for k, v in result.stats.get("counters", {}).items()}
        | {
            f"dedup/{k}": v
            for k, v in result.stats.get("dedup", {}).items()
            if isinstance(v, (int, float))
        }
    )
    dedup_sizes = result.stats.get("dedup", {}).get("cluster_sizes", {})
    if dedup_sizes:
        tracker.table(
            "dedup_clusters",
            ["cluster_size", "clusters"],
            [[int(size), n] for size, n in dedup_sizes.items()],
        )
    tracker.bar_chart(
        "drops_by_reason",
        "reason",
        "documents",
        [
            [f"{s}: {r}", n]
            for s, reasons in ledger.dropped.items()
            for r, n in reasons.items()
            if n
        ],
        title="Documents dropped, by stage and reason",
    )
    tracker.log_dataset(result.version_dir)
    # One table of rejected documents per reason, to read what each rule threw away.
    by_reason: dict[str, list[list]] = {}
    for r in result.reject_samples:
        by_reason.setdefault(f"{r['stage']}.{r['reason']}", []).append(
            [r["source"], r["url"], r["title"], r["text"]]
        )
    for reason, rows in sorted(by_reason.items()):
        tracker.table(f"rejects/{reason}", ["source", "url", "title", "text"], rows)
    tracker.table(
        "rejects_sample",
        ["stage", "reason", "source", "url", "title", "text"],
        [
            [r["stage"], r["reason"], r["source"], r["url"], r["title"], r["text"]]
            for r in result.reject_samples
        ],
    )
    wandb_dir = tracker.dir
    tracker.finish()
    return {
        "version": result.version,
        "version_dir": str(result.version_dir),
        "tokenizer_path": str(result.tokenizer_path),
        "stage_outputs": str(result.run_dir),
        "ledger": ledger.to_dict(),
        "ledger_text": ledger.format(),
        "stats": result.stats,
        "wandb": wandb_dir,
    }


def _train_step(cfg: JobConfig, paths: RunPaths, version_dir: str, tokenizer_path: str) -> dict:
    from jobs.launch import launch_deepspeed, launch_ray_train, launch_torchrun

    worker_cfg = {
        "model": cfg.model.resolved(),
        "train": cfg.train.model_dump(),
        "eval": cfg.eval.model_dump(),  # in-loop evaluation (eval.every_steps)
        "dataset_dir": version_dir,
        "tokenizer_path": tokenizer_path,
        "out_dir": str(paths.train_dir),
        "run": paths.name,
        "wandb": cfg.wandb.model_dump(),
        "wandb_run_name": f"{paths.name}-train",
        "wandb_dir": str(paths.wandb_dir),
    }
    tc = cfg.train
    if tc.launcher == "torchrun":
        summary = launch_torchrun(
            worker_cfg, num_workers=tc.num_workers, launcher_args=tc.launcher_args
        )
    elif tc.launcher == "deepspeed":
        summary = launch_deepspeed(
            worker_cfg,
            num_workers=tc.num_workers,
            hostfile=tc.hostfile,
            launcher_args=tc.launcher_args,
        )
    else:
        connect_ray(cfg)
        summary = launch_ray_train(
            worker_cfg,
            num_workers=tc.num_workers,
            use_gpu=tc.use_gpu,
            storage_dir=paths.ray_storage,
        )
    return {**summary, "train_dir": str(paths.train_dir)}


def _eval_step(cfg: JobConfig, paths: RunPaths, final_dir: str, version_dir: str) -> dict:
    from model.evaluate import evaluate, format_report
    from pipeline.store import atomic_write_text

    results = evaluate(final_dir, version_dir, cfg.eval.model_dump())
    atomic_write_json(paths.eval_json, results)
    report = paths.eval_json.with_suffix(".md")
    atomic_write_text(report, format_report(results))
    tracker = start_run(
        cfg.wandb.model_dump(),
        name=f"{paths.name}-train",
        job_type="train",
        directory=paths.wandb_dir,
        group=paths.name,
    )
    tracker.summary(eval_summary(results))
    tracker.table(
        "eval/generations",
        ["prompt", "mode", "continuation", "stop_reason", "passed"],
        [
            [c["prompt"], c["mode"], c["continuation"], c["stop_reason"], c["passed"]]
            for c in results["generation"]["cases"]
        ],
    )
    tracker.table(
        "eval/suite_tests",
        ["suite", "test", "language", "prompt", "continuation", "passed", "failed checks"],
        [
            [
                suite,
                t["name"],
                t["language"],
                t["prompt"],
                t["continuation"],
                t["passed"],
                "; ".join(c["detail"] for c in t["checks"] if not c["passed"]),
            ]
            for suite, r in results["suites"].items()
            for t in r["tests"]
        ],
    )
    tracker.finish()
    return {
        "eval_json": str(paths.eval_json),
        "eval_report": str(report),
        "validation": results["validation"],
        "generation_pass_rate": results["generation"]["pass_rate"],
        "suites": {k: v["pass_rate"] for k, v in results["suites"].items()},
        "cloze": {k: v for k, v in results["cloze"].items() if k != "examples"},
        "multiple_choice": {
            k: {
                "accuracy": v["accuracy"],
                "accuracy_norm": v["accuracy_norm"],
                "chance": v["chance"],
            }
            for k, v in results["multiple_choice"].items()
        },
    }


def eval_summary(results: dict) -> dict:
    """The headline numbers of an evaluation, as flat keys for a wandb summary."""
    out = {
        "eval/val_loss": results["validation"]["loss"],
        "eval/val_perplexity": results["validation"]["perplexity"],
        "eval/generation_pass_rate": results["generation"]["pass_rate"],
        "eval/cloze_accuracy": results["cloze"]["accuracy"],
        "eval/cloze_chance": results["cloze"].get("chance"),
    }
    for source, s in results["validation_by_source"]["by_source"].items():
        out[f"eval/val_loss/{source}"] = s["loss"]
    for name, r in results["suites"].items():
        out[f"eval/suite/{name}/pass_rate"] = r["pass_rate"]
    for name, r in results["multiple_choice"].items():
        out[f"eval/choice/{name}/accuracy"] = r["accuracy"]
        out[f"eval/choice/{name}/accuracy_norm"] = r["accuracy_norm"]
        out[f"eval/choice/{name}/chance"] = r["chance"]
    return out


def run_job(
    cfg: JobConfig,
    *,
    run_name: str | None = None,
    resume: bool = False,
    steps: tuple[str, ...] = STEPS,
    dataset_dir: str | None = None,
) -> dict:
    """Run the chosen steps in order; returns the run's state (what was produced where)."""
    if resume and run_name is None:
        run_name = latest_unfinished_run(cfg, steps)
        if run_name is None:
            raise ConfigError(
                f"no unfinished run of job {cfg.name!r} with steps {', '.join(steps)} under "
                f"{cfg.output_dir}/runs to resume (name one with --run-name)"
            )
    paths = RunPaths(cfg, run_name or new_run_name(cfg.name))
    if paths.state.exists() and not resume:
        raise ConfigError(f"run {paths.name!r} already exists; pass --resume to continue it")
    if resume and not paths.state.exists():
        # A named run that was never started is started: a retried job (a KubeRay RayJob's
        # backoffLimit, a requeued Slurm job) runs one fixed command with --resume, and its
        # first attempt must not be refused for having nothing to resume.
        log.info("run %s: nothing to resume yet, starting it", paths.name)
    if dataset_dir is not None:
        from pipeline.shards import read_manifest

        read_manifest(dataset_dir)  # fail now, before a run is recorded, if it is no dataset
    state = paths.load_state()
    state.update(
        {
            "name": paths.name,
            "job": cfg.name,
            "config": cfg.model_dump(),
            "steps_requested": list(steps),
        }
    )
    state.setdefault("steps", {})
    paths.save_state(state)
    log.info("run %s: steps %s, outputs under %s", paths.name, ", ".join(steps), paths.output)

    done = state["steps"]
    if "data" in steps:
        if "data" in done:
            log.info("data: done in an earlier attempt, skipping")
        else:
            done["data"] = _data_step(cfg, paths)
            paths.save_state(state)
            # The summary at the end shows the ledger; only a job with steps still to come
            # shows it now as well, so that it is seen before a long training.
            more = len(steps) > 1
            log.info(
                "data: dataset version %s%s",
                done["data"]["version_dir"],
                "\n" + done["data"]["ledger_text"] if more else "",
            )

    version_dir = dataset_dir or (done.get("data") or {}).get("version_dir")
    if version_dir is None and ("train" in steps or "eval" in steps):
        current = paths.store.current_version(cfg.data.dataset_name)
        if current is None:
            raise ConfigError(
                f"no dataset version of {cfg.data.dataset_name!r} in {paths.store.root}; "
                "run `kiln data` first or pass --dataset"
            )
        version_dir = str(current)

    if "train" in steps:
        if "train" in done:
            log.info("train: done in an earlier attempt, skipping")
        else:
            from pipeline.shards import read_manifest

            manifest = read_manifest(version_dir)
            tokenizer_path = str(paths.store.root / manifest["tokenizer"]["path"])
            done["train"] = _train_step(cfg, paths, version_dir, tokenizer_path)
            paths.save_state(state)

    if "eval" in steps:
        final_dir = (done.get("train") or {}).get("final_dir")
        if final_dir is None:
            raise ConfigError("eval needs a trained checkpoint: run the train step first")
        done["eval"] = _eval_step(cfg, paths, final_dir, version_dir)
        paths.save_state(state)

    state["finished"] = True
    state["wandb_mode"] = resolve_mode(cfg.wandb.mode)
    state["wandb_dir"] = str(paths.wandb_dir)
    paths.save_state(state)
    return state


def format_summary(state: dict) -> str:
    """What a user reads at the end of a job: where everything is, and the ledger."""
    steps = state["steps"]
    cwd = os.getcwd()

    def rel(p: str) -> str:
        return os.path.relpath(p, cwd) if p and p.startswith(cwd) else p

    lines = [f"kiln run {state['name']} finished"]
    if "data" in steps:
        d = steps["data"]
        sp = d["stats"]["splits"]
        lines.append(
            f"  dataset version  {rel(d['version_dir'])}  (train {sp['train']['tokens']:,} tokens / "
            f"{sp['train']['documents']} docs, val {sp['val']['tokens']:,} tokens / "
            f"{sp['val']['documents']} docs)"
        )
        lines.append(
            f"  stage outputs    {rel(d['stage_outputs'])}  (documents/, rejects/, ledger.json,"
            " rejects_sample.jsonl)"
        )
        crawl = d["stats"].get("crawl")
        if crawl:
            not_stored = {**crawl["skipped"], **crawl["pages"]}
            not_stored.pop("fetched", None)
            listing = ", ".join(f"{n} {why}" for why, n in sorted(not_stored.items())) or "none"
            lines.append(
                f"  crawl            {rel(crawl['folder'])}  ({crawl['pages_stored']} pages "
                f"stored, {crawl['requests']} requests; not stored: {listing})"
            )
    if "train" in steps:
        t = steps["train"]
        lines.append(f"  checkpoint       {rel(t['final_dir'])}")
        lines.append(
            f"  training loss    {t['first_logged_loss']:.3f} at step 1 -> {t['final_loss']:.3f} at step {t['steps']}"
        )
    if "eval" in steps:
        e = steps["eval"]
        cloze = e["cloze"]
        cloze_text = (
            f"cloze {cloze['accuracy']:.1%} on {cloze['items']} items "
            f"(chance {cloze['chance']:.1%})"
            if cloze.get("accuracy") is not None
            else "cloze: no items"
        )
        lines.append(
            f"  eval results     {rel(e['eval_json'])}  (val loss {e['validation']['loss']:.3f}, "
            f"generation tests {e['generation_pass_rate']:.0%} passed, {cloze_text})"
        )
        extra = [f"suite {k} {v:.0%} passed" for k, v in e.get("suites", {}).items()]
        extra += [
            f"{k} {v['accuracy']:.0%} (per byte {v['accuracy_norm']:.0%}, chance {v['chance']:.0%})"
            for k, v in e.get("multiple_choice", {}).items()
            if v["accuracy"] is not None
        ]
        if "eval_report" in e:
            lines.append(f"  eval report      {rel(e['eval_report'])}  ({'; '.join(extra)})")
    mode = state.get("wandb_mode")
    if mode and mode != "disabled":
        hint = "  (offline: `wandb sync` uploads them)" if mode == "offline" else ""
        lines.append(f"  wandb runs       {rel(state['wandb_dir'])}{hint}")
    output_dir = state.get("config", {}).get("output_dir", "kiln-out")
    where = "" if output_dir == "kiln-out" else f" --output-dir {rel(str(output_dir))}"
    lines.append(f"  report           kiln report {state['name']}{where}  (HTML with plots)")
    if "data" in steps:
        lines.append("ledger:")
        lines.extend("  " + line for line in steps["data"]["ledger_text"].splitlines())
    return "\n".join(lines)
