"""Text generation from a GPT with a key/value cache, one prompt or a batch of them.

Prompts of different lengths share a batch by left padding: every row ends at the same column,
so one new column per step serves them all, and an attention mask keeps padding out of both the
attention and the rotary positions (model/gpt.py), so a row gives the tokens it would give
alone. The prompts run once through the model (prefill) to fill the cache; after that each step
feeds only the newest token of each row.

A row stops at the end-of-document token, at a stop string, or after ``max_new_tokens`` new
tokens (the prompt never counts), and says which. Decoding is greedy at temperature 0; above
it, top-k, top-p and a repetition penalty shape the distribution, and a seed makes the draw
repeat.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from model.gpt import GPT, KVCache

__all__ = ["Generation", "PromptTooLongError", "generate", "generate_batch", "sample_next"]


class PromptTooLongError(ValueError):
    """A prompt plus the tokens asked for does not fit in the model's context."""


@dataclass
class Generation:
    """New tokens only (the prompt is not repeated); an end-of-document token, if produced, is
    the last of them. ``text`` is filled when a decoder was given: the new tokens decoded,
    without the end-of-document token and cut before a stop string that ended the row."""

    tokens: list[int]
    stop_reason: str  # "eos", "stop_string" or "max_new_tokens"
    text: str | None = None
    stop_string: str | None = None
    min_length_met: bool = True
    notes: list[str] = field(default_factory=list)


def apply_repetition_penalty(
    logits: torch.Tensor, seen: torch.Tensor, penalty: float
) -> torch.Tensor:
    """CTRL's penalty (Keskar et al., 2019, section 4.1): the logit of every token already in
    the row is divided by ``penalty`` when positive and multiplied by it when negative, so it
    always becomes less likely. logits: (B, V); seen: (B, V) bool."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def sample_next(
    logits: torch.Tensor,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick the next token from logits of shape (B, V); temperature 0 means greedy."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # Drop tokens once the mass before them already reaches top_p (keep at least one).
        drop = cumulative - sorted_logits.softmax(-1) >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _check_fits(prompts: Sequence[Sequence[int]], max_new_tokens: int, context: int) -> None:
    for i, prompt in enumerate(prompts):
        if not prompt:
            raise ValueError(f"prompt {i} is empty; give at least one token")
        if len(prompt) + max_new_tokens > context:
            raise PromptTooLongError(
                f"prompt {i} of {len(prompt)} tokens plus max_new_tokens={max_new_tokens} exceeds "
                f"the model's context of {context} tokens (shorten the prompt to at most "
                f"{context - max_new_tokens} tokens or ask for fewer new tokens)"
            )


@torch.no_grad()
def generate_batch(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    eos_id: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    min_new_tokens: int = 0,
    stop_strings: Sequence[str] = (),
    decode: Callable[[list[int]], str] | None = None,
    seed: int | None = None,
    use_cache: bool = True,
) -> list[Generation]:
    """Continue every prompt; returns one Generation per prompt, in order.

    ``min_new_tokens`` keeps the end-of-document token and stop strings from ending a row
    earlier. When it cannot be met (it exceeds ``max_new_tokens``), generation still stops at
    ``max_new_tokens`` and each Generation says so (``min_length_met`` false, a note) instead of
    running on. Stop strings need ``decode`` (token ids to text). With ``use_cache=False`` every
    step re-runs the whole sequence, which gives the same tokens at quadratic cost.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1 (got {max_new_tokens})")
    if repetition_penalty <= 0:
        raise ValueError(f"repetition_penalty must be positive (got {repetition_penalty})")
    if stop_strings and decode is None:
        raise ValueError("stop strings need a decode function to see the generated text")
    context = model.config.block_size
    _check_fits(prompts, max_new_tokens, context)
    notes = []
    if min_new_tokens > max_new_tokens:
        notes.append(
            f"min_new_tokens={min_new_tokens} cannot be met: at most max_new_tokens="
            f"{max_new_tokens} new tokens are generated"
        )

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)

    B = len(prompts)
    longest = max(len(p) for p in prompts)
    # Left padding with the end-of-document id (any valid id would do: the mask hides it).
    ids = torch.full((B, longest), eos_id, dtype=torch.long, device=device)
    mask = torch.zeros((B, longest), dtype=torch.bool, device=device)
    seen = torch.zeros((B, model.config.vocab_size), dtype=torch.bool, device=device)
    for row, prompt in enumerate(prompts):
        ids[row, longest - len(prompt) :] = torch.tensor(list(prompt), device=device)
        mask[row, longest - len(prompt) :] = True
        seen[row, list(prompt)] = True
    padded = bool((~mask).any())

    cache = None
    if use_cache:
        dtype = next(model.parameters()).dtype
        cache = KVCache(model.config, B, longest + max_new_tokens, device, dtype)
    logits, _ = model(ids, cache=cache, attention_mask=mask if padded else None)

    out: list[list[int]] = [[] for _ in range(B)]
    results: list[Generation | None] = [None] * B
    for step in range(max_new_tokens):
        last = logits[:, -1, :].float()  # (B, V)
        last = apply_repetition_penalty(last, seen, repetition_penalty)
        if step < min_new_tokens:
            last[:, eos_id] = float("-inf")
        nxt = sample_next(
            last, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
        )  # (B,)
        for row in range(B):
            if results[row] is not None:
                continue
            token = int(nxt[row])
            out[row].append(token)
            seen[row, token] = True
            n = len(out[row])
            reason, stop_at = None, None
            if token == eos_id:
                reason = "eos"
            elif stop_strings and n >= min_new_tokens:
                text = decode(out[row])
                hits = [(text.find(s), s) for s in stop_strings if s and s in text]
                if hits:
                    reason, stop_at = "stop_string", min(hits)[1]
            if reason is None and n == max_new_tokens:
                reason = "max_new_tokens"
            if reason is not None:
                results[row] = Generation(
                    tokens=out[row],
                    stop_reason=reason,
                    stop_string=stop_at,
                    min_length_met=n >= min_new_tokens,
                    notes=list(notes),
                )
        if all(r is not None for r in results):
            break
        # Finished rows keep being fed (their tokens are ignored) so the batch stays one tensor.
        step_ids = nxt.view(B, 1)
        mask = torch.cat([mask, torch.ones((B, 1), dtype=torch.bool, device=device)], dim=1)
        if use_cache:
            logits, _ = model(step_ids, cache=cache, attention_mask=mask if padded else None)
        else:
            ids = torch.cat([ids, step_ids], dim=1)
            logits, _ = model(ids, attention_mask=mask if padded else None)
    model.train(was_training)

    final: list[Generation] = []
    for gen in results:
        assert gen is not None  # every row ends by max_new_tokens at the latest
        if decode is not None:
            body = gen.tokens[:-1] if gen.stop_reason == "eos" else gen.tokens
            text = decode(body)
            if gen.stop_string is not None:
                text = text[: text.find(gen.stop_string)]
            gen.text = text
        final.append(gen)
    return final


def generate(
    model: GPT,
    prompt: Sequence[int],
    *,
    max_new_tokens: int,
    eos_id: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    **options,
) -> Generation:
    """Continue one prompt (``generate_batch`` with a batch of one; same options)."""
    return generate_batch(
        model,
        [prompt],
        max_new_tokens=max_new_tokens,
        eos_id=eos_id,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        use_cache=use_cache,
        **options,
    )[0]
