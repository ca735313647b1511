"""Batched generation: left padding, cache parity, stops, the length rules, seeded sampling."""

from __future__ import annotations

import pytest
import torch

from model.generate import PromptTooLongError, apply_repetition_penalty, generate, generate_batch
from model.gpt import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures("one_thread")

EOS = 96


def tiny(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = dict(vocab_size=97, block_size=64, n_layer=2, n_head=4, d_model=32)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg)).eval()


PROMPTS = [[5, 17, 42, 8, 3, 9, 11], [1], [60, 61, 62], [7, 7, 7, 7, 7]]


def decode(ids: list[int]) -> str:
    """A stand-in tokenizer: token i is the letter chr(ord('a') + i % 26)."""
    return "".join(chr(ord("a") + i % 26) for i in ids)


@pytest.mark.parametrize("n_kv_head", [None, 2])
def test_left_padded_batch_gives_each_prompt_its_own_logits(n_kv_head):
    model = tiny(n_kv_head=n_kv_head)
    short, long_ = [4, 5, 6], [9, 8, 7, 6, 5, 4]
    ids = torch.tensor([[EOS] * 3 + short, long_])
    mask = torch.tensor([[0] * 3 + [1] * 3, [1] * 6]).bool()
    batched, _ = model(ids, attention_mask=mask)
    alone, _ = model(torch.tensor([short]))
    torch.testing.assert_close(batched[0, 3:], alone[0], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(batched).all()  # padding queries attend to themselves, never NaN


@pytest.mark.parametrize("n_kv_head", [None, 1])
def test_greedy_batch_equals_one_prompt_at_a_time(n_kv_head):
    model = tiny(n_kv_head=n_kv_head)
    batch = generate_batch(model, PROMPTS, max_new_tokens=12, eos_id=EOS)
    for prompt, gen in zip(PROMPTS, batch, strict=True):
        alone = generate(model, prompt, max_new_tokens=12, eos_id=EOS)
        assert gen.tokens == alone.tokens
        assert gen.stop_reason == alone.stop_reason


def test_cached_and_uncached_batches_agree():
    model = tiny(n_kv_head=2)
    cached = generate_batch(model, PROMPTS, max_new_tokens=15, eos_id=EOS, use_cache=True)
    uncached = generate_batch(model, PROMPTS, max_new_tokens=15, eos_id=EOS, use_cache=False)
    assert [g.tokens for g in cached] == [g.tokens for g in uncached]


def test_max_new_tokens_counts_only_new_tokens():
    model = tiny()
    for gen in generate_batch(model, PROMPTS, max_new_tokens=9, eos_id=EOS):
        assert gen.stop_reason == "max_new_tokens" and len(gen.tokens) == 9


def test_long_prompt_error_names_both_lengths():
    model = tiny()
    with pytest.raises(PromptTooLongError, match=r"prompt 1 of 60 tokens .*=10 .* 64 tokens"):
        generate_batch(model, [[1, 2], list(range(60))], max_new_tokens=10, eos_id=EOS)


def test_end_of_document_stops_a_row_and_is_left_out_of_the_text():
    model = tiny()
    with torch.no_grad():
        model.lm_head.weight[EOS] += 5.0  # make the end-of-document id the likeliest token
    gen = generate(model, [1, 2, 3], max_new_tokens=10, eos_id=EOS, decode=decode)
    assert gen.stop_reason == "eos" and gen.tokens == [EOS] and gen.text == ""


def test_min_new_tokens_holds_off_the_end_of_document():
    model = tiny()
    with torch.no_grad():
        model.lm_head.weight[EOS] += 5.0
    gen = generate(model, [1, 2, 3], max_new_tokens=10, eos_id=EOS, min_new_tokens=4)
    assert len(gen.tokens) == 5 and gen.tokens[-1] == EOS and gen.min_length_met


def test_an_unmeetable_minimum_is_reported_not_looped_on():
    model = tiny()
    gen = generate(model, [1, 2, 3], max_new_tokens=5, eos_id=EOS, min_new_tokens=50)
    assert len(gen.tokens) == 5 and gen.stop_reason == "max_new_tokens"
    assert not gen.min_length_met and "cannot be met" in gen.notes[0]


def test_stop_string_ends_the_row_and_is_cut_from_the_text():
    model = tiny()
    free = generate(model, [1, 2, 3], max_new_tokens=20, eos_id=EOS, decode=decode)
    stop = free.text[5:7]  # a two-letter string the model writes after its 5th token
    first = free.text.find(stop)
    gen = generate(
        model, [1, 2, 3], max_new_tokens=20, eos_id=EOS, decode=decode, stop_strings=[stop]
    )
    assert gen.stop_reason == "stop_string" and gen.stop_string == stop
    assert gen.text == free.text[:first]
    assert len(gen.tokens) == first + 2  # it stopped at the token that completed the string


def test_seeded_sampling_repeats_and_seeds_differ():
    model = tiny()
    opts = dict(max_new_tokens=20, eos_id=EOS, temperature=1.0, top_k=40, top_p=0.95)
    a = generate_batch(model, PROMPTS, seed=3, **opts)
    b = generate_batch(model, PROMPTS, seed=3, **opts)
    c = generate_batch(model, PROMPTS, seed=4, **opts)
    assert [g.tokens for g in a] == [g.tokens for g in b]
    assert [g.tokens for g in a] != [g.tokens for g in c]


def test_repetition_penalty_lowers_seen_tokens_only():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    seen = torch.tensor([[True, True, False]])
    out = apply_repetition_penalty(logits, seen, 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0]]
    model = tiny()
    plain = generate(model, [7] * 5, max_new_tokens=30, eos_id=EOS)
    penalised = generate(model, [7] * 5, max_new_tokens=30, eos_id=EOS, repetition_penalty=5.0)
    assert len(set(penalised.tokens)) > len(set(plain.tokens))
