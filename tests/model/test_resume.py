"""How a run decides to resume: which checkpoint, loaded how, and what it refuses."""

from __future__ import annotations

import pytest

from model.resume import ResumeError, _prune, dataset_fingerprint, latest_state, plan_resume
from pipeline.store import atomic_write_json

IDENTITY = {"block_size": 32, "seed": 1, "dataset": "abc"}


def _checkpoint(out, step=8, world_size=2, zero_stage=2, **identity):
    tag = f"step_{step:06d}"
    state = {"step": step, "tokens_consumed": step * 64, "world_size": world_size}
    state.update(zero_stage=zero_stage, wandb_run_id="w1", **{**IDENTITY, **identity})
    atomic_write_json(out / "checkpoints" / tag / "kiln_state.json", state)
    (out / "checkpoints" / "latest").write_text(tag)
    return tag


def _plan(out, world_size=2, zero_stage=2):
    return plan_resume(out, world_size=world_size, zero_stage=zero_stage, expect=IDENTITY)


def test_no_checkpoint_is_a_fresh_start(tmp_path):
    assert latest_state(tmp_path) is None and _plan(tmp_path) is None


def test_same_world_loads_the_checkpoint_as_saved(tmp_path):
    _checkpoint(tmp_path)
    plan = _plan(tmp_path)
    assert not plan.universal and plan.load_tag == "step_000008"
    assert plan.state["tokens_consumed"] == 512 and plan.state["wandb_run_id"] == "w1"


@pytest.mark.parametrize("world_size", [1, 4])
def test_another_world_size_goes_through_a_universal_checkpoint(tmp_path, world_size):
    _checkpoint(tmp_path)
    plan = _plan(tmp_path, world_size=world_size)
    assert plan.universal and plan.load_tag == "universal_step_000008"


def test_zero_0_keeps_whole_state_and_needs_no_conversion(tmp_path):
    _checkpoint(tmp_path, zero_stage=0)
    assert not _plan(tmp_path, world_size=1, zero_stage=0).universal
    with pytest.raises(ResumeError, match="ZeRO stage 0 on 2 process"):
        _plan(tmp_path, zero_stage=2)


@pytest.mark.parametrize(("key", "value"), [("seed", 2), ("block_size", 64), ("dataset", "x")])
def test_a_different_data_identity_is_refused(tmp_path, key, value):
    _checkpoint(tmp_path, **{key: value})
    with pytest.raises(ResumeError, match=f"trained with {key}="):
        _plan(tmp_path)


def test_latest_naming_a_folder_without_kiln_state_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "latest").write_text("global_step5")
    with pytest.raises(ResumeError, match="not a checkpoint kiln wrote"):
        latest_state(tmp_path)


def test_pruning_keeps_the_last_k_and_their_universal_copies(tmp_path):
    ckpt = tmp_path / "checkpoints"
    for step in (4, 8, 12):
        (ckpt / f"step_{step:06d}").mkdir(parents=True)
    (ckpt / "universal_step_000004").mkdir()
    (ckpt / "universal_step_000012").mkdir()
    _prune(ckpt, keep=2)
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "step_000008",
        "step_000012",
        "universal_step_000012",
    ]


def test_dataset_fingerprint_follows_the_training_shards(version):
    assert dataset_fingerprint(version) == dataset_fingerprint(version)
    assert len(dataset_fingerprint(version)) == 16
