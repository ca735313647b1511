"""Training with two CPU processes (gloo): ZeRO stages agree, a killed run resumes on the same
loss curve, and a run resumes on fewer and then more processes.

Every run trains the same small model on the same real shards for the same steps; runs start
through kiln's own launchers (torchrun, and the deepspeed launcher with a hostfile).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch

from jobs.launch import launch_deepspeed, launch_torchrun, torchrun_command, write_worker_config
from model.checkpoint import load_final
from model.config import TrainConfig
from model.resume import latest_state

pytestmark = pytest.mark.slow

MODEL = dict(n_layer=2, n_head=2, n_kv_head=None, d_model=32, block_size=32, dropout=0.0)
STEPS = 40
EVERY = 4  # checkpoint interval, steps
# Runs that differ only in how the same sums are split (ZeRO stage, number of processes)
# agree to float32 rounding, not bit for bit.
TOLERANCE = 1e-4


def worker_config(version: Path, out_dir: Path, **train: object) -> dict:
    fields = dict(
        zero_stage=2,
        num_workers=2,
        micro_batch_size=2,
        max_steps=STEPS,
        warmup_steps=4,
        log_every=1,
        checkpoint_every=EVERY,
        keep_checkpoints=2,
    )
    fields.update(train)
    return {
        "model": MODEL,
        "train": TrainConfig(**fields).model_dump(),
        "dataset_dir": str(version),
        "tokenizer_path": str(version / "tokenizer.json"),
        "out_dir": str(out_dir),
        "run": out_dir.name,
    }


def losses(out_dir: Path) -> list[float]:
    lines = (out_dir / "train_log.jsonl").read_text().splitlines()
    steps = [json.loads(line) for line in lines]
    assert [s["step"] for s in steps] == list(range(1, len(steps) + 1)), "gaps in the log"
    return [s["loss"] for s in steps]


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every process under it at once, as a node failure would (torchrun
    starts its workers in sessions of their own, so killing its group is not enough)."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)
    psutil.wait_procs(tree, timeout=30)


def run_until_checkpoint(cmd: list[str], out_dir: Path, min_step: int) -> dict:
    """Start ``cmd``, SIGKILL all its processes once a checkpoint of ``min_step`` or later is
    complete, and return that checkpoint's state."""
    env = dict(os.environ, DS_ACCELERATOR="cpu")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            state = latest_state(out_dir) if (out_dir / "checkpoints").exists() else None
            if state is not None and state["step"] >= min_step:
                kill_tree(proc.pid)
                break
            if proc.poll() is not None:
                output = proc.stdout.read().decode()[-4000:]
                pytest.fail(f"run ended (exit {proc.returncode}) before it was killed:\n{output}")
            time.sleep(0.01)
        else:
            pytest.fail("no checkpoint appeared in time")
    finally:
        kill_tree(proc.pid)
        proc.wait()
    assert not (out_dir / "summary.json").exists(), "the run finished before the kill"
    return latest_state(out_dir)


@pytest.fixture(scope="module", autouse=True)
def own_wandb_service():
    """Each launched run starts its own wandb service, as it would on a cluster.

    Earlier tests in this pytest process may have started a wandb service, whose address wandb
    keeps in WANDB_SERVICE; launched workers would inherit it and register their runs there, so
    the SIGKILLed run's id would stay "in use" in that surviving service when it resumes.
    """
    saved = os.environ.pop("WANDB_SERVICE", None)
    yield
    if saved is not None:
        os.environ["WANDB_SERVICE"] = saved


@pytest.fixture(scope="module")
def reference(version, tmp_path_factory):
    """An unbroken ZeRO-2 run on two processes under torchrun."""
    out = tmp_path_factory.mktemp("reference")
    summary = launch_torchrun(worker_config(version, out), num_workers=2, launcher_args=[])
    return {"out": out, "summary": summary, "losses": losses(out)}


@pytest.fixture(scope="module")
def killed(version, tmp_path_factory):
    """The reference run with a wandb run, SIGKILLed after its checkpoint at step 8 or later;
    a copy of its folder is left for the world-size test."""
    root = tmp_path_factory.mktemp("killed")
    out = root / "run"
    cfg = worker_config(version, out)
    cfg.update(
        wandb={"mode": "offline", "project": "kiln", "entity": None},
        wandb_run_name="kill-test",
        wandb_dir=str(root / "wandb"),
    )
    cmd = torchrun_command(write_worker_config(cfg), num_workers=2, launcher_args=[])
    state = run_until_checkpoint(cmd, out, min_step=2 * EVERY)
    copy = root / "copy"
    shutil.copytree(out, copy)
    return {"root": root, "out": out, "copy": copy, "state": state, "config": cfg}


def test_the_reference_run_learns_and_exports(reference):
    first, last = reference["losses"][0], reference["losses"][-1]
    assert len(reference["losses"]) == STEPS and last < first - 0.3
    summary = reference["summary"]
    assert summary["tokens_consumed"] == STEPS * 2 * 2 * MODEL["block_size"]
    model, _, meta = load_final(reference["out"] / "final")
    assert meta["steps"] == STEPS and model.lm_head.weight is model.tok_emb.weight
    tags = sorted(p.name for p in (reference["out"] / "checkpoints").glob("step_*"))
    assert tags == ["step_000036", "step_000040"]  # keep_checkpoints=2


def test_zero_stages_1_2_3_give_the_same_losses_and_weights(version, reference, tmp_path):
    # ZeRO-1 under the deepspeed launcher, with a hostfile that names this machine.
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=2\n")
    z1 = tmp_path / "z1"
    cfg = worker_config(version, z1, zero_stage=1, launcher="deepspeed", hostfile=str(hostfile))
    launch_deepspeed(cfg, num_workers=2, hostfile=str(hostfile), launcher_args=[])
    # ZeRO-3 under torchrun, recomputing activations and with the optimizer state offloaded.
    z3 = tmp_path / "z3"
    cfg = worker_config(
        version, z3, zero_stage=3, activation_checkpointing=True, offload_optimizer=True
    )
    launch_torchrun(cfg, num_workers=2, launcher_args=[])

    expected = reference["losses"]
    assert losses(z1) == pytest.approx(expected, rel=TOLERANCE)
    assert losses(z3) == pytest.approx(expected, rel=TOLERANCE)
    weights = load_final(reference["out"] / "final")[0].state_dict()
    for out in (z1, z3):
        other = load_final(out / "final")[0].state_dict()
        for name, tensor in weights.items():
            torch.testing.assert_close(other[name], tensor, rtol=1e-3, atol=1e-4)


def test_a_killed_run_resumes_on_the_same_loss_curve(killed, reference):
    out, state = killed["out"], killed["state"]
    assert state["step"] % EVERY == 0 and state["tokens_consumed"] == state["step"] * 128
    run_id = state["wandb_run_id"]
    assert run_id == "kill-test"
    # Resume under another wandb run name: the run id comes from the checkpoint.
    cfg = dict(killed["config"], wandb_run_name="another-name")
    summary = launch_torchrun(cfg, num_workers=2, launcher_args=[])

    assert summary["resumed_from_step"] == state["step"]
    assert losses(out) == pytest.approx(reference["losses"], rel=1e-6)
    assert latest_state(out)["wandb_run_id"] == run_id
    wandb_runs = list((killed["root"] / "wandb" / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(wandb_runs) == 2  # the killed run and its resumption, one wandb run id


def test_resume_on_one_process_then_on_two(version, killed, reference):
    out, start = killed["copy"], killed["state"]["step"]
    # Two processes -> one: the same global batch through two accumulated micro-batches.
    cfg = worker_config(version, out, num_workers=1, grad_accum_steps=2)
    cmd = torchrun_command(write_worker_config(cfg), num_workers=1, launcher_args=[])
    middle = run_until_checkpoint(cmd, out, min_step=start + 2 * EVERY)
    assert middle["world_size"] == 1
    assert middle["tokens_consumed"] == middle["step"] * 128  # the position carried over
    # One process -> two.
    summary = launch_torchrun(worker_config(version, out), num_workers=2, launcher_args=[])

    assert summary["resumed_from_step"] == middle["step"]
    assert summary["tokens_consumed"] == reference["summary"]["tokens_consumed"]
    assert losses(out) == pytest.approx(reference["losses"], rel=TOLERANCE)


def test_in_loop_evaluation_under_zero_3_leaves_training_unchanged(version, tmp_path):
    """Every rank joins the evaluation's forwards (ZeRO-3 gathers weights collectively); the
    losses match a run without it, since evaluation draws no random numbers."""
    from model.config import EvalConfig

    runs = {}
    for name, every in (("plain", 0), ("with_eval", 2)):
        out = tmp_path / name
        cfg = worker_config(version, out, zero_stage=3, max_steps=4, checkpoint_every=0)
        cfg["eval"] = EvalConfig(
            every_steps=every, max_new_tokens=4, val_max_windows=2, in_loop_prompts=2
        ).model_dump()
        launch_torchrun(cfg, num_workers=2, launcher_args=[])
        runs[name] = out
    assert losses(runs["with_eval"]) == losses(runs["plain"])
    lines = [json.loads(x) for x in (runs["with_eval"] / "eval_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4]
    assert all(x["eval/val_loss"] > 0 and len(x["continuations"]) == 2 for x in lines)
    assert not (runs["plain"] / "eval_log.jsonl").exists()
