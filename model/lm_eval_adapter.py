"""An lm-evaluation-harness model for kiln checkpoints.

lm-evaluation-harness (EleutherAI's ``lm-eval`` package) asks a model for three things; kiln
answers them with its own scoring and generation code, so harness results and ``kiln eval``
results come from the same arithmetic:

- ``loglikelihood``: (context, continuation) pairs, through :func:`model.scores.loglikelihoods`;
- ``loglikelihood_rolling``: a whole text, each token predicted once from as much context as
  the model holds, the first from the end-of-document token (kiln's document boundary);
- ``generate_until``: greedy or sampled continuation up to stop strings, through
  :func:`model.generate.generate_batch`.

From Python::

    import lm_eval
    from lm_eval.tasks import TaskManager
    from model.lm_eval_adapter import KilnLM, local_task
    lm = KilnLM("kiln-out/runs/<run>/train/final")
    lm_eval.simple_evaluate(
        model=lm,
        tasks=[local_task("jobs/tasks/kiln_sample_choice.yaml")],
        task_manager=TaskManager(include_defaults=False),  # skip indexing lm-eval's own tasks
    )

or from lm-eval's command line, once this module is imported (it registers the name ``kiln``).
Local task files (jobs/tasks/*.yaml) read local JSON lines, so no hub is needed.
"""

from __future__ import annotations

from pathlib import Path

import yaml

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError as exc:  # fail when the adapter is built, with the fix, not mid-run
    raise ImportError(
        "the lm-evaluation-harness adapter needs the lm-eval package: "
        "pip install -c constraints.txt 'kiln[lm-eval]'"
    ) from exc

from model.checkpoint import checkpoint_eos_token, load_final
from model.generate import generate_batch
from model.scores import loglikelihoods

__all__ = ["KilnLM", "local_task"]


@register_model("kiln")
class KilnLM(LM):
    """A kiln checkpoint (the exported ``final`` folder) as an lm-eval model."""

    def __init__(
        self,
        checkpoint: str,
        batch_size: int | str = 16,
        device: str = "cpu",
        max_gen_toks: int = 64,
        **_ignored,
    ) -> None:
        super().__init__()
        self.checkpoint = str(checkpoint)
        self.model, self.tokenizer, self.meta = load_final(checkpoint, device=device)
        self.eos_id = self.tokenizer.token_to_id(checkpoint_eos_token(self.meta))
        self.block_size = self.model.config.block_size
        # lm-eval passes "auto" to ask the model to choose; kiln's models are small.
        self.batch_size = 16 if batch_size == "auto" else int(batch_size)
        self.max_gen_toks = int(max_gen_toks)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids if text else []

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        pairs = []
        for request in requests:
            context, continuation = request.args
            ctx = self._encode(context) or [self.eos_id]  # empty context: a document start
            pairs.append((ctx, self._encode(continuation)))
        results = loglikelihoods(self.model, pairs, batch_size=self.batch_size)
        for request, result in zip(requests, results, strict=True):
            self.cache_hook.add_partial("loglikelihood", request.args, result)
        return results

    def loglikelihood_rolling(self, requests) -> list[float]:
        out = []
        for request in requests:
            (text,) = request.args
            tokens = self._encode(text)
            full = [self.eos_id, *tokens]  # full[j] predicts tokens[j]
            pieces = []
            for start in range(0, len(tokens), self.block_size):
                end = min(start + self.block_size, len(tokens))
                # The last piece still sees a full window: its context reaches back as far as
                # the model's context allows, but only its new tokens are scored.
                first = max(0, end - self.block_size)
                pieces.append((full[first : start + 1], tokens[start:end]))
            scored = loglikelihoods(self.model, pieces, batch_size=self.batch_size)
            total = sum(lp for lp, _ in scored)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
            out.append(total)
        return out

    def generate_until(self, requests) -> list[str]:
        out: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(repr(sorted(request.args[1].items())), []).append(i)
        for members in groups.values():
            kwargs = dict(requests[members[0]].args[1])
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = min(int(kwargs.pop("max_gen_toks", self.max_gen_toks)), self.block_size - 1)
            sample = bool(kwargs.pop("do_sample", False))
            temperature = float(kwargs.pop("temperature", 1.0 if sample else 0.0))
            if not sample:
                temperature = 0.0
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                # Keep the end of a context that would not leave room for the new tokens.
                prompts = [
                    (self._encode(requests[i].args[0]) or [self.eos_id])[
                        -(self.block_size - max_new) :
                    ]
                    for i in chunk
                ]
                gens = generate_batch(
                    self.model,
                    prompts,
                    max_new_tokens=max_new,
                    eos_id=self.eos_id,
                    temperature=temperature,
                    top_k=kwargs.get("top_k"),
                    top_p=kwargs.get("top_p"),
                    stop_strings=until,
                    decode=self.tokenizer.decode,
                    seed=kwargs.get("seed", 0) if temperature > 0 else None,
                )
                for i, gen in zip(chunk, gens, strict=True):
                    out[i] = gen.text
                    self.cache_hook.add_partial("generate_until", requests[i].args, gen.text)
        return out  # type: ignore[return-value]


def local_task(path: str | Path) -> dict:
    """A task config from a local YAML file, its ``data_files`` made absolute (they are written
    relative to the YAML file), ready for ``simple_evaluate(tasks=[...])``."""
    path = Path(path).resolve()
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    files = (config.get("dataset_kwargs") or {}).get("data_files")
    if isinstance(files, dict):
        config["dataset_kwargs"]["data_files"] = {
            split: str((path.parent / f).resolve()) for split, f in files.items()
        }
    return config
