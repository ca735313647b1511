"""The training loop's parts: schedule, optimizer groups, DeepSpeed config, the config's
combinations, and what a non-finite loss does to a real (single-process) DeepSpeed engine."""

from __future__ import annotations

import math
import socket

import pytest
import torch

from model.config import TrainConfig
from model.gpt import GPT, GPTConfig
from model.train import (
    NonFiniteLossError,
    deepspeed_config,
    lr_at,
    param_groups,
    train_step,
)


def test_learning_rate_warms_up_then_decays_to_min_lr():
    kw = dict(lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(10, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.55)  # half-way down the cosine
    assert lr_at(110, **kw) == pytest.approx(0.1)
    assert lr_at(500, **kw) == pytest.approx(0.1)


def test_weight_decay_applies_to_matrices_only():
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, d_model=16))
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"])
    assert all(p.dim() == 1 for p in no_decay["params"])  # RMSNorm gains
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_deepspeed_config_follows_the_train_config():
    tc = TrainConfig(
        zero_stage=3, offload_optimizer=True, grad_clip=0.5, nonfinite_loss="skip"
    ).model_dump()
    cfg = deepspeed_config(tc, bf16=True, on_gpu=True, load_universal=True)
    assert cfg["zero_optimization"] == {
        "stage": 3,
        "offload_optimizer": {"device": "cpu", "pin_memory": True},
    }
    assert cfg["gradient_clipping"] == 0.5
    assert cfg["bf16"] == {"enabled": True, "check_grad_overflow": True}
    assert cfg["checkpoint"] == {"load_universal": True}
    plain = deepspeed_config(TrainConfig(grad_clip=0).model_dump(), bf16=False)
    assert "gradient_clipping" not in plain and "checkpoint" not in plain
    assert plain["zero_optimization"] == {"stage": 2}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(zero_stage=0, offload_optimizer=True), "offload_optimizer needs zero_stage"),
        (dict(zero_stage=0, nonfinite_loss="skip"), "'skip' needs zero_stage"),
        (dict(launcher="torchrun", hostfile="hosts"), "hostfile is read by the deepspeed"),
        (dict(launcher_args=["--nnodes=2"]), "launcher_args are for"),
    ],
)
def test_config_combinations_that_cannot_work_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**fields)


@pytest.fixture(scope="module")
def single_process_group():
    """A one-process gloo group, as torchrun would set it up, for a real DeepSpeed engine."""
    import os

    import deepspeed
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
    env["MASTER_PORT"] = str(port)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    deepspeed.init_distributed(dist_backend="gloo")
    yield deepspeed
    dist.destroy_process_group()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _engine(deepspeed):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, d_model=16))
    tc = TrainConfig(zero_stage=1, micro_batch_size=2, nonfinite_loss="skip").model_dump()
    optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-2)
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=deepspeed_config(tc, bf16=False)
    )
    return engine


def _step(deepspeed_engine, targets, policy="skip", step=1):
    x = torch.randint(0, 50, (2, 16))
    return train_step(
        deepspeed_engine,
        [(x, targets)],
        grad_accum_steps=1,
        nonfinite_loss=policy,
        step=step,
        device=torch.device("cpu"),
    )


@pytest.mark.slow
def test_a_non_finite_loss_is_skipped_or_stops_the_run(single_process_group):
    engine = _engine(single_process_group)
    good = torch.randint(0, 50, (2, 16))
    loss, skipped = _step(engine, good)
    assert math.isfinite(loss) and not skipped
    before = {k: v.clone() for k, v in engine.module.state_dict().items()}
    steps_before = engine.global_steps
    # Every target ignored: the mean over no tokens is NaN.
    nan_targets = torch.full((2, 16), -100)
    loss, skipped = _step(engine, nan_targets, step=2)
    assert math.isnan(loss) and skipped
    after = engine.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no update at all
    assert engine.global_steps == steps_before  # nor a scheduler step
    loss, skipped = _step(engine, good, step=3)
    assert math.isfinite(loss) and not skipped  # training goes on

    with pytest.raises(NonFiniteLossError, match="loss is nan at step 7; stopping"):
        _step(engine, nan_targets, policy="stop", step=7)
