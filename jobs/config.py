"""The job config: one YAML file per job, validated into one typed tree, plus overrides.

``load_job_config(path, ["train.max_steps=50", ...])`` reads the YAML, applies ``key=value``
overrides (dotted keys; values parsed as YAML, so ``20``, ``0.1``, ``true``, ``[en, de]`` and
``null`` get their types), resolves relative input and hostfile paths against the config
file's folder, and validates the result. Any unknown field or out-of-range value raises
:class:`ConfigError` naming the dotted field, before any work starts.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from model.config import EvalConfig, ModelConfig, TrainConfig
from pipeline.config import NAME_PATTERN, DataConfig, StrictModel

__all__ = [
    "DEFAULT_CONFIG",
    "ConfigError",
    "JobConfig",
    "RayConfig",
    "WandbConfig",
    "apply_overrides",
    "load_job_config",
]

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "demo.yaml"


class ConfigError(ValueError):
    """A job config that cannot be used; the message names each bad field."""


class RayConfig(StrictModel):
    address: str | None = Field(
        None,
        description="Ray cluster to connect to ('auto', 'ray://host:10001', ...); null starts "
        "a local Ray instance for the job.",
    )
    num_cpus: int | None = Field(
        None, ge=1, description="CPUs of the local instance; null uses every core."
    )


class WandbConfig(StrictModel):
    mode: Literal["auto", "online", "offline", "disabled"] = Field(
        "auto", description="'auto' is online when WANDB_API_KEY is set, offline otherwise."
    )
    project: str = Field("kiln", description="wandb project the runs go to.")
    entity: str | None = Field(None, description="wandb team or user; null = your default.")


class JobConfig(StrictModel):
    name: str = Field(
        "demo",
        pattern=NAME_PATTERN,
        description="Job name; runs are "
        "named <name>-<date>-<time> unless --run-name says otherwise.",
    )
    output_dir: str = Field(
        "kiln-out",
        description="Root of the store, runs and wandb files. Relative to the working directory.",
    )
    data: DataConfig
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    ray: RayConfig = RayConfig()
    wandb: WandbConfig = WandbConfig()

    @model_validator(mode="after")
    def _decontaminate_against_eval_prompts(self) -> JobConfig:
        # Training text must not contain what evaluation scores; unless told otherwise, the data
        # job checks documents against this job's own prompts.
        if self.data.decontam.texts is None:
            self.data.decontam.texts = list(self.eval.prompts)
        return self


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Return a copy of ``raw`` with each ``dotted.key=value`` set (lists by index)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r} has an empty key part")
        node: Any = raw
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                node = node[_index(part, node, parts[: i + 1])]
            else:
                if not isinstance(node.get(part, {}), (dict, list)):
                    raise ConfigError(
                        f"override {key!r}: {'.'.join(parts[: i + 1])} is not a section"
                    )
                node = node.setdefault(part, {})
        last = parts[-1]
        if isinstance(node, list):
            node[_index(last, node, parts)] = _parse_value(value)
        else:
            node[last] = _parse_value(value)
    return raw


def _index(part: str, node: list, path: list[str]) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"override: {'.'.join(path)} is not an index of a {len(node)}-item list")
    return int(part)


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {field}: unknown field")
        else:
            given = err.get("input")
            shown = "" if isinstance(given, dict) else f" (got {given!r})"
            lines.append(f"  {field}: {err['msg']}{shown}")
    return "\n".join(lines)


def load_job_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> JobConfig:
    """Read, override, resolve and validate a job config."""
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    raw = apply_overrides(raw, overrides or [])
    try:
        cfg = JobConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid job config {path}:\n{_format_errors(exc)}") from None
    # Input paths are relative to the config file, so a config works from any directory.
    base = path.resolve().parent
    for spec in cfg.data.inputs:
        if os.path.isabs(spec.path) or spec.path.startswith(("http://", "https://")):
            continue
        local = os.path.normpath(base / spec.path)
        # An hf input that is not a local path is a dataset name on the hub.
        if spec.kind != "hf" or os.path.exists(local):
            spec.path = local
        if spec.base and not os.path.isabs(spec.base) and "://" not in spec.base:
            spec.base = os.path.normpath(base / spec.base)
    cfg.data.decontam.files = [
        f if os.path.isabs(f) else os.path.normpath(base / f) for f in cfg.data.decontam.files
    ]
    tok_path = cfg.data.tokenizer.path
    if tok_path and not os.path.isabs(tok_path):
        cfg.data.tokenizer.path = os.path.normpath(base / tok_path)
    if cfg.train.hostfile and not os.path.isabs(cfg.train.hostfile):
        cfg.train.hostfile = os.path.normpath(base / cfg.train.hostfile)
    return cfg
