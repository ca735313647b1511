"""The whole job, crawl-to-evaluated-model, on a tiny slice of the sample, through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from model.checkpoint import load_final
from pipeline.shards import read_manifest, verify_version
from tests.helpers import REPO, SAMPLE

SLICE = [
    "web/flowfx.de.tmux.html.gz",
    "web/anarc.at.cdpath.html.gz",
    "web/readability-wikipedia-4.html.gz",
    "web/rete-mirabile.net.15jahre.html.gz",
    "warc/whirlwind.warc.gz",
    "books/pg120_Treasure_Island__2019_release.txt",
    "books/pg120_Treasure_Island__2022_release.txt",
    "books/pg41_The_Legend_of_Sleepy_Hollow.txt",
    "books/pg43_The_Strange_Case_Of_Dr_Jekyll_And_Mr_Hyd.txt",
]

JOB = """
name: e2e
output_dir: {out}
data:
  dataset_name: tiny
  inputs: [{inputs}]
  filter: {{min_words: 50, languages: [en, de]}}
  tokenizer: {{vocab_size: 1024}}
  shards: {{val_fraction: 0.1}}
model: {{preset: tiny, block_size: 64, d_model: 64}}
train: {{zero_stage: 2, num_workers: 2, micro_batch_size: 4, max_steps: 30, warmup_steps: 5,
         log_every: 10, checkpoint_every: 20, keep_checkpoints: 1}}
eval: {{max_new_tokens: 8, cloze_items: 10, val_max_windows: 8, every_steps: 20, in_loop_prompts: 2}}
ray: {{num_cpus: 2}}
wandb: {{mode: offline}}
"""


def kiln(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    inputs = ", ".join(f"{{path: {SAMPLE / rel}}}" for rel in SLICE)
    config = root / "job.yaml"
    config.write_text(JOB.format(out=root / "out", inputs=inputs))
    proc = kiln("run", str(config), "--run-name", "e2e-1", cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    state = json.loads((root / "out" / "runs" / "e2e-1" / "state.json").read_text())
    return root, config, proc, state


@pytest.mark.slow
def test_ledger_balances_and_is_printed(job):
    _, _, proc, state = job
    ledger = state["steps"]["data"]["ledger"]
    assert ledger["balanced"]
    assert ledger["documents_in"] == len(SLICE)
    assert ledger["documents_in"] == ledger["documents_kept"] + ledger["documents_dropped"]
    reasons = {s["stage"]: s["reasons"] for s in ledger["stages"]}
    assert reasons["dedup"] == {"near_duplicate": 1}
    assert "documents in 9 = kept" in proc.stdout
    assert "near_duplicate" in proc.stdout


@pytest.mark.slow
def test_dataset_manifest_matches_the_shards(job):
    _, _, _, state = job
    version_dir = state["steps"]["data"]["version_dir"]
    assert verify_version(version_dir) == []
    manifest = read_manifest(version_dir)
    assert manifest["splits"]["val"]["documents"] >= 1
    assert (
        manifest["splits"]["train"]["documents"] + manifest["splits"]["val"]["documents"]
        == (state["steps"]["data"]["ledger"]["documents_kept"])
    )


@pytest.mark.slow
def test_training_lowered_the_loss_and_exported_a_checkpoint(job):
    _, _, proc, state = job
    train = state["steps"]["train"]
    assert train["final_loss"] < train["first_logged_loss"] - 0.5
    model, tokenizer, meta = load_final(train["final_dir"])
    assert meta["dataset_version"] == "v0001"
    assert "step    30/30" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_evaluation_wrote_its_json(job):
    _, _, proc, state = job
    results = json.loads(Path(state["steps"]["eval"]["eval_json"]).read_text())
    assert results["validation"]["loss"] > 0 and results["validation"]["tokens"] > 0
    assert results["generation"]["total"] == 8 and results["generation"]["pass_rate"] == 1.0
    assert results["dataset"]["version"] == "v0001"
    assert results["training_run"] == "e2e-1"
    assert results["suites"]["sample-heldout"]["total"] > 0
    assert results["multiple_choice"]["sample_choice"]["chance"] == 0.25
    assert Path(state["steps"]["eval"]["eval_report"]).read_text().startswith("# Evaluation")
    assert "eval results" in proc.stdout and "eval report" in proc.stdout


@pytest.mark.slow
def test_in_loop_evaluation_logged_loss_and_continuations(job):
    root, _, _, state = job
    train_dir = Path(state["steps"]["train"]["final_dir"]).parent
    lines = [json.loads(x) for x in (train_dir / "eval_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [20]
    assert lines[0]["eval/val_loss"] > 0 and len(lines[0]["continuations"]) == 2
    # Offline, each process that resumes the training run (training, then evaluation) writes
    # its own folder under the same run id; `wandb sync` joins them. The table is in one of them.
    runs = (root / "out" / "wandb" / "wandb").glob("offline-run-*e2e-1-train")
    tables = [t for run in runs for t in run.rglob("*continuations*.table.json")]
    assert tables  # the wandb table of continuations


@pytest.mark.slow
def test_wandb_runs_were_written_offline(job):
    root, _, _, _ = job
    runs = sorted(p.name for p in (root / "out" / "wandb" / "wandb").glob("offline-run-*"))
    assert any(r.endswith("e2e-1-data") for r in runs)
    assert any(r.endswith("e2e-1-train") for r in runs)


@pytest.mark.slow
def test_resume_skips_finished_steps_and_eval_cli_scores_the_checkpoint(job):
    root, config, _, state = job
    # Mark the run unfinished as a kill would leave it; --resume must not redo data or training.
    state_path = root / "out" / "runs" / "e2e-1" / "state.json"
    state.pop("finished")
    del state["steps"]["eval"]
    state_path.write_text(json.dumps(state))
    proc = kiln("run", str(config), "--resume", cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "data: done in an earlier attempt" in proc.stderr
    assert "train: done in an earlier attempt" in proc.stderr

    final = state["steps"]["train"]["final_dir"]
    proc = kiln("eval", final, "eval.cloze_items=5", cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (Path(final) / "eval.json").exists()
    assert "generation tests 8/8 passed" in proc.stdout


@pytest.mark.slow
def test_zero_stage_3_trains_and_exports_loadable_weights(job):
    root, config, _, state = job
    version_dir = state["steps"]["data"]["version_dir"]
    proc = kiln(
        "train",
        str(config),
        "--dataset",
        version_dir,
        "--run-name",
        "z3",
        "train.zero_stage=3",
        "train.max_steps=4",
        "train.log_every=2",
        "train.checkpoint_every=0",
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    model, _, _ = load_final(root / "out" / "runs" / "z3" / "train" / "final")
    assert model.lm_head.weight is model.tok_emb.weight
    assert REPO.exists()


@pytest.mark.slow
def test_report_renders_the_real_run(job):
    root, _, proc, _ = job
    assert "kiln report e2e-1" in proc.stdout  # the summary says how to get the report
    report = kiln("report", "e2e-1", "--output-dir", str(root / "out"), cwd=root)
    assert report.returncode == 0, report.stderr[-3000:]
    folder = root / "out" / "runs" / "e2e-1" / "report"
    for name in ("drops.png", "loss.png", "lr.png", "tokens_per_s.png", "eval_scores.png"):
        assert (folder / name).read_bytes()[:4] == b"\x89PNG", name
    page = (folder / "index.html").read_text()
    assert "documents in" in page and "Generations" in page
