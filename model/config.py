"""Typed configuration of the model side: architecture presets, training and evaluation.

Each field says what it means and in which unit; the job config (jobs/config.py) nests these.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["PRESETS", "EvalConfig", "ModelConfig", "TrainConfig"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# Architecture presets. The ~125M/~350M sizes follow the GPT-3 paper's table 2.1 widths and
# depths (Brown et al., 2020) with Llama-style blocks; "1b" takes Llama 3.2 1B's shape (16
# layers, width 2048, 32 query and 8 key/value heads, SwiGLU width 8192). The size names count
# parameters with a GPT-2-sized vocabulary (~50k) and the embedding table included.
PRESETS: dict[str, dict] = {
    "tiny": dict(n_layer=4, n_head=4, n_kv_head=None, d_model=128, block_size=256),
    "small": dict(n_layer=6, n_head=6, n_kv_head=None, d_model=384, block_size=512),
    "125m": dict(n_layer=12, n_head=12, n_kv_head=None, d_model=768, block_size=2048),
    "350m": dict(n_layer=24, n_head=16, n_kv_head=None, d_model=1024, block_size=2048),
    "1b": dict(n_layer=16, n_head=32, n_kv_head=8, d_model=2048, block_size=2048, ffn_hidden=8192),
}


class ModelConfig(_Strict):
    preset: Literal["tiny", "small", "125m", "350m", "1b"] | None = Field(
        "tiny", description="Start from a preset; fields set here override it."
    )
    n_layer: int | None = Field(None, ge=1, le=256, description="Transformer blocks.")
    n_head: int | None = Field(None, ge=1, le=256, description="Query heads per block.")
    n_kv_head: int | None = Field(
        None, ge=1, le=256, description="Key/value heads (grouped-query attention); null = n_head."
    )
    d_model: int | None = Field(None, ge=8, le=65536, description="Residual stream width.")
    block_size: int | None = Field(None, ge=8, le=131072, description="Context length, tokens.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout rate in training.")

    def resolved(self) -> dict:
        """Preset values overridden by the fields that are set."""
        base = dict(PRESETS[self.preset]) if self.preset else {}
        for key in ("n_layer", "n_head", "n_kv_head", "d_model", "block_size"):
            value = getattr(self, key)
            if value is not None:
                base[key] = value
        missing = [k for k in ("n_layer", "n_head", "d_model", "block_size") if k not in base]
        if missing:
            raise ValueError(f"model: set a preset or all of {missing}")
        base["dropout"] = self.dropout
        return base

    @model_validator(mode="after")
    def _check_shape(self) -> ModelConfig:
        r = self.resolved()
        if r["d_model"] % r["n_head"]:
            raise ValueError(
                f"d_model ({r['d_model']}) must be divisible by n_head ({r['n_head']})"
            )
        kv = r.get("n_kv_head") or r["n_head"]
        if r["n_head"] % kv:
            raise ValueError(f"n_head ({r['n_head']}) must be divisible by n_kv_head ({kv})")
        return self


class TrainConfig(_Strict):
    zero_stage: int = Field(2, ge=0, le=3, description="DeepSpeed ZeRO stage (0 = plain DDP).")
    num_workers: int = Field(2, ge=1, le=4096, description="Training processes (one per GPU).")
    use_gpu: bool = Field(False, description="One GPU per worker; fp32 on the CPU otherwise.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="'auto' is bf16 on GPUs that support it, fp32 on the CPU."
    )
    micro_batch_size: int = Field(8, ge=1, description="Sequences per worker per forward pass.")
    grad_accum_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    max_steps: int = Field(300, ge=1, description="Optimizer steps.")
    lr: float = Field(3e-3, gt=0, le=1.0, description="Peak learning rate.")
    min_lr: float = Field(3e-4, ge=0, description="Learning rate at the end of cosine decay.")
    warmup_steps: int = Field(30, ge=0, description="Linear warmup, optimizer steps.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW decay, on matrices only.")
    beta1: float = Field(0.9, gt=0, lt=1, description="AdamW first-moment decay.")
    beta2: float = Field(0.95, gt=0, lt=1, description="AdamW second-moment decay.")
    grad_clip: float = Field(1.0, ge=0, description="Clip the global grad norm; 0 = off.")
    seed: int = Field(1337, description="Seeds model init and the data order.")
    log_every: int = Field(10, ge=1, description="Print and log metrics every N steps.")
    checkpoint_every: int = Field(0, ge=0, description="Save every N steps; 0 = only at the end.")
    keep_checkpoints: int = Field(2, ge=1, description="Keep the last K step checkpoints.")
    activation_checkpointing: bool = Field(
        False, description="Recompute each block's activations in the backward pass."
    )
    offload_optimizer: bool = Field(
        False, description="Keep optimizer state in CPU memory (ZeRO-Offload); ZeRO 1-3 only."
    )
    compile: bool = Field(False, description="torch.compile the model (pays off on GPUs).")
    nonfinite_loss: Literal["stop", "skip"] = Field(
        "stop",
        description="On a NaN/inf loss: 'stop' the run naming the step, or 'skip' the update "
        "(ZeRO 1-3 only).",
    )
    launcher: Literal["ray", "torchrun", "deepspeed"] = Field(
        "ray", description="Start the workers with Ray Train, torchrun or the deepspeed launcher."
    )
    hostfile: str | None = Field(
        None,
        description="deepspeed launcher: hostfile ('host slots=N' lines); null = this machine.",
    )
    launcher_args: list[str] = Field(
        default_factory=list,
        description="Extra arguments for torchrun or deepspeed, e.g. ['--nnodes=2', ...].",
    )

    @model_validator(mode="after")
    def _check_combinations(self) -> TrainConfig:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        if self.zero_stage == 0 and self.offload_optimizer:
            raise ValueError("offload_optimizer needs zero_stage 1, 2 or 3 (got 0)")
        if self.zero_stage == 0 and self.nonfinite_loss == "skip":
            # Within an accumulation, a bad micro-batch's update is dropped by ZeRO's
            # gradient-norm check (model/train.py: train_step), which stage 0 lacks.
            raise ValueError("nonfinite_loss 'skip' needs zero_stage 1, 2 or 3 (got 0)")
        if self.hostfile is not None and self.launcher != "deepspeed":
            raise ValueError(f"hostfile is read by the deepspeed launcher, not {self.launcher!r}")
        if self.launcher_args and self.launcher == "ray":
            raise ValueError("launcher_args are for the torchrun and deepspeed launchers")
        return self


class EvalConfig(_Strict):
    prompts: list[str] = Field(
        default_factory=lambda: [
            "Alice was beginning to get very tired",
            "The Time Traveller",
            "Die Stadt liegt",
            "Candide",
        ],
        description="Fixed prompts continued greedily and by sampling.",
    )
    max_new_tokens: int = Field(40, ge=1, description="Tokens generated per prompt at most.")
    temperature: float = Field(0.8, gt=0, description="Sampling temperature.")
    top_k: int | None = Field(50, ge=1, description="Sample from the k likeliest tokens.")
    seed: int = Field(0, description="Seeds sampling, so results repeat.")
    val_max_windows: int = Field(64, ge=1, description="Validation windows scored at most.")
    cloze_items: int = Field(100, ge=1, description="Last-word cloze items built from val text.")
    cloze_context_tokens: int = Field(64, ge=8, description="Context before each cloze word.")
    cloze_sources: list[str] = Field(
        default_factory=lambda: ["book"],
        description="Held-out documents of these sources give the cloze passages.",
    )
    suites: list[str] = Field(
        default_factory=lambda: ["sample_heldout"],
        description="Generation suites: YAML paths, or names of those in jobs/suites/.",
    )
    choice_tasks: list[str] = Field(
        default_factory=lambda: ["sample_choice"],
        description="Multiple-choice task files: JSON-lines paths, or names in jobs/tasks/.",
    )
    batch_size: int = Field(16, ge=1, description="Sequences per forward pass when scoring.")
    every_steps: int = Field(
        0, ge=0, description="In-loop evaluation every N training steps; 0 = only at the end."
    )
    in_loop_prompts: int = Field(
        4, ge=0, description="Of eval.prompts, how many in-loop evaluation continues greedily."
    )
