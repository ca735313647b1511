"""Export to a Hugging Face Llama folder: transformers loads it, its logits and greedy tokens
match kiln's, and its generate() runs."""

from __future__ import annotations

import shutil

import pytest
import torch

from jobs.cli import main as kiln
from model.checkpoint import load_final
from model.generate import generate
from model.gpt import GPT, GPTConfig
from pipeline.store import atomic_write_json
from pipeline.tokenizer import EOS_TOKEN

PROMPT = "The Time Traveller (for so it will be convenient to speak of him)"


def _final(folder, version, **config):
    """An exported kiln checkpoint with weights large enough that attention is far from uniform
    (at the usual 0.02 init, a wrong rotary layout would hardly change the logits)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=500, block_size=64, n_layer=2, n_head=4, d_model=64, **config))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    folder.mkdir()
    torch.save(model.state_dict(), folder / "model.pt")
    atomic_write_json(folder / "config.json", model.config.to_dict())
    atomic_write_json(folder / "meta.json", {"steps": 0})
    shutil.copyfile(version / "tokenizer.json", folder / "tokenizer.json")
    return folder


@pytest.fixture(scope="module", params=[dict(n_kv_head=2), dict(tie_embeddings=False)])
def exported(request, version, tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    final = _final(root / "final", version, **request.param)
    assert kiln(["export", str(final), "--out", str(root / "hf")]) == 0
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(root / "hf").eval()
    tokenizer = AutoTokenizer.from_pretrained(root / "hf")
    kiln_model, kiln_tokenizer, _ = load_final(final)
    return hf, tokenizer, kiln_model, kiln_tokenizer, root / "hf"


def test_the_folder_holds_what_transformers_reads(exported):
    *_, folder = exported
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    hf, *_ = exported
    assert type(hf).__name__ == "LlamaForCausalLM"


def test_tokenizers_agree(exported):
    _, tokenizer, _, kiln_tokenizer, _ = exported
    assert tokenizer(PROMPT)["input_ids"] == kiln_tokenizer.encode(PROMPT).ids
    assert tokenizer.eos_token == EOS_TOKEN
    assert tokenizer.eos_token_id == kiln_tokenizer.token_to_id(EOS_TOKEN)


def test_logits_match_kilns(exported):
    hf, tokenizer, kiln_model, _, _ = exported
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    with torch.no_grad():
        expected, _ = kiln_model(ids)
        got = hf(ids).logits
    assert expected.std() > 1.0  # far from uniform, so the test can see a layout error
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_greedy_generation_matches_kilns(exported):
    hf, tokenizer, kiln_model, _, _ = exported
    prompt = tokenizer(PROMPT)["input_ids"]
    ours = generate(kiln_model, prompt, max_new_tokens=12, eos_id=tokenizer.eos_token_id)
    out = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)
    assert out[0, len(prompt) :].tolist() == ours.tokens


def test_generate_with_several_return_sequences_runs(exported):
    hf, tokenizer, *_ = exported
    ids = torch.tensor([tokenizer("Candide")["input_ids"]])
    torch.manual_seed(0)
    out = hf.generate(ids, max_length=24, num_return_sequences=3, do_sample=True, top_k=20)
    assert out.shape[0] == 3 and ids.shape[1] < out.shape[1] <= 24
    texts = tokenizer.batch_decode(out, skip_special_tokens=True)
    assert all(t.startswith("Candide") for t in texts)
