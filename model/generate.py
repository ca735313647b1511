"""Text generation from a GPT with a key/value cache.

The prompt is run once through the model (prefill) to fill the cache; after that each step
feeds only the newest token. Generation stops at the end-of-document token or after
``max_new_tokens`` new tokens, whichever comes first, and says which.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model.gpt import GPT, KVCache

__all__ = ["Generation", "generate", "sample_next"]


@dataclass
class Generation:
    """New tokens only (the prompt is not repeated); an end-of-document token, if produced, is
    the last of them."""

    tokens: list[int]
    stop_reason: str  # "eos" or "max_new_tokens"


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


@torch.no_grad()
def generate(
    model: GPT,
    prompt: list[int],
    *,
    max_new_tokens: int,
    eos_id: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    use_cache: bool = True,
) -> Generation:
    """Continue one prompt. With ``use_cache=False`` every step re-runs the whole sequence,
    which gives the same tokens (a test checks it) at quadratic cost."""
    if not prompt:
        raise ValueError("prompt is empty; give at least one token")
    context = model.config.block_size
    if len(prompt) + max_new_tokens > context:
        raise ValueError(
            f"prompt of {len(prompt)} tokens plus max_new_tokens={max_new_tokens} exceeds the "
            f"model's context of {context} tokens"
        )
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)

    ids = torch.tensor([prompt], dtype=torch.long, device=device)  # (1, T)
    cache = None
    if use_cache:
        dtype = next(model.parameters()).dtype
        cache = KVCache(model.config, 1, len(prompt) + max_new_tokens, device, dtype)
    logits, _ = model(ids, cache=cache)
    out: list[int] = []
    stop = "max_new_tokens"
    for _ in range(max_new_tokens):
        nxt = sample_next(
            logits[:, -1, :],
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=generator,
        )  # (1,)
        token = int(nxt.item())
        out.append(token)
        if token == eos_id:
            stop = "eos"
            break
        if len(out) == max_new_tokens:
            break
        if use_cache:
            logits, _ = model(nxt.view(1, 1), cache=cache)
        else:
            ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
            logits, _ = model(ids)
    model.train(was_training)
    return Generation(tokens=out, stop_reason=stop)
