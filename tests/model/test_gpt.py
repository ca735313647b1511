"""The GPT, its KV cache and generation."""

from __future__ import annotations

import pytest
import torch

from model.generate import generate, sample_next
from model.gpt import GPT, GPTConfig


def tiny(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = dict(vocab_size=97, block_size=64, n_layer=2, n_head=4, d_model=32)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg)).eval()


def test_forward_shapes_and_loss():
    model = tiny()
    idx = torch.randint(0, 97, (3, 16))
    targets = torch.randint(0, 97, (3, 16))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 16, 97)
    # Small init: predictions start near uniform, so the loss is close to ln(vocab).
    assert loss.item() == pytest.approx(torch.log(torch.tensor(97.0)).item(), rel=0.1)


def test_tied_embeddings_and_param_count():
    model = tiny()
    assert model.lm_head.weight is model.tok_emb.weight
    assert model.num_params() == sum(p.numel() for p in model.parameters())
    assert model.flops_per_token(64) > 6 * model.num_params(non_embedding=True)


def test_causal_attention_ignores_the_future():
    model = tiny()
    idx = torch.randint(0, 97, (1, 20))
    changed = idx.clone()
    changed[0, 15:] = (changed[0, 15:] + 1) % 97
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.allclose(a[0, :15], b[0, :15], atol=1e-5)


@pytest.mark.parametrize("n_kv_head", [None, 2, 1])
def test_cached_and_uncached_greedy_decoding_agree(n_kv_head):
    model = tiny(n_kv_head=n_kv_head)
    prompt = [5, 17, 42, 8]
    cached = generate(model, prompt, max_new_tokens=20, eos_id=96, use_cache=True)
    uncached = generate(model, prompt, max_new_tokens=20, eos_id=96, use_cache=False)
    assert cached.tokens == uncached.tokens


def test_generation_stops_at_max_new_tokens():
    model = tiny()
    gen = generate(model, [1, 2, 3], max_new_tokens=7, eos_id=96)
    assert gen.stop_reason == "max_new_tokens" and len(gen.tokens) == 7


def test_generation_stops_at_end_of_document():
    model = tiny()
    with torch.no_grad():
        model.lm_head.weight[96] += 5.0  # make the EOS id (96) the likeliest token
    gen = generate(model, [1, 2, 3], max_new_tokens=10, eos_id=96)
    assert gen.stop_reason == "eos"
    assert gen.tokens[-1] == 96 and 96 not in gen.tokens[:-1]


def test_prompt_too_long_names_both_lengths():
    model = tiny()
    with pytest.raises(ValueError, match="60 tokens plus max_new_tokens=10 exceeds .* 64"):
        generate(model, list(range(60)), max_new_tokens=10, eos_id=96)


def test_seeded_sampling_repeats():
    model = tiny()
    a = generate(model, [1, 2], max_new_tokens=15, eos_id=96, temperature=1.0, top_k=20, seed=3)
    b = generate(model, [1, 2], max_new_tokens=15, eos_id=96, temperature=1.0, top_k=20, seed=3)
    assert a.tokens == b.tokens


def test_top_k_and_top_p_restrict_the_choice():
    logits = torch.tensor([[5.0, 4.0, 0.0, -1.0]])
    g = torch.Generator().manual_seed(0)
    picks = {int(sample_next(logits, temperature=1.0, top_k=2, generator=g)) for _ in range(200)}
    assert picks == {0, 1}
    picks = {int(sample_next(logits, temperature=1.0, top_p=0.5, generator=g)) for _ in range(50)}
    assert picks == {0}
    assert int(sample_next(logits)) == 0  # temperature 0 is greedy


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    model = tiny(n_kv_head=2).train()
    idx = torch.randint(0, 97, (2, 24))
    targets = torch.randint(0, 97, (2, 24))
    grads = []
    for recompute in (False, True):
        model.zero_grad()
        model.activation_checkpointing = recompute
        _, loss = model(idx, targets)
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
    assert grads[0][0] == pytest.approx(grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(a, b)


def test_flops_per_token_counts_the_output_layer_once_tied_or_not():
    tied, untied = tiny(), tiny(tie_embeddings=False)
    c = tied.config
    attention = 12 * c.n_layer * c.d_model * 64
    body = tied.num_params(non_embedding=True)
    assert tied.flops_per_token(64) == 6 * (body + c.vocab_size * c.d_model) + attention
    assert untied.flops_per_token(64) == tied.flops_per_token(64)
