"""Export of a trained checkpoint to a Hugging Face Llama-format folder.

kiln's GPT is a Llama-family decoder (RMSNorm, rotary positions, SwiGLU, grouped-query
attention, no biases), so its weights map one to one onto ``LlamaForCausalLM``::

    tok_emb                        model.embed_tokens
    blocks.i.attn_norm / mlp_norm  model.layers.i.input_layernorm / post_attention_layernorm
    blocks.i.attn.wq, wk, wv, wo   model.layers.i.self_attn.q_proj, k_proj, v_proj, o_proj
    blocks.i.mlp.w_gate, w_up, w_down  model.layers.i.mlp.gate_proj, up_proj, down_proj
    norm, lm_head                  model.norm, lm_head (left out when tied to the embedding)

One difference needs care: kiln rotates adjacent pairs of each head's dimensions (2i, 2i+1),
while transformers' Llama rotates the two halves (i, i + head_dim/2). Reordering the output
rows of the query and key projections within each head, evens first and odds after, turns one
convention into the other; attention scores are unchanged because queries and keys are
reordered alike (the same step Hugging Face's conversion of Meta's Llama weights takes).

The folder holds config.json, generation_config.json, model.safetensors and the tokenizer as
tokenizer.json with tokenizer_config.json and special_tokens_map.json, so that
``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained`` load it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from model.checkpoint import checkpoint_eos_token, load_final
from model.gpt import GPT
from pipeline.store import atomic_write_json, staging_dir

__all__ = ["export_hf", "llama_config", "llama_state_dict"]

log = logging.getLogger("kiln.export")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _halves_order(head_dim: int) -> torch.Tensor:
    """Index that puts a head's even dimensions first, then its odd ones."""
    return torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])


def _to_rotate_half(weight: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor:
    """Reorder a q/k projection's output rows (heads * head_dim, d_model) per head."""
    d_in = weight.shape[1]
    per_head = weight.reshape(heads, head_dim, d_in)
    return per_head[:, _halves_order(head_dim), :].reshape(heads * head_dim, d_in)


def llama_state_dict(model: GPT, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """kiln's weights under transformers' Llama names, contiguous and unshared."""
    c = model.config
    src = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    out = {
        "model.embed_tokens.weight": src["tok_emb.weight"],
        "model.norm.weight": src["norm.weight"],
    }
    if not c.tie_embeddings:
        out["lm_head.weight"] = src["lm_head.weight"]
    for i in range(c.n_layer):
        b, h = f"blocks.{i}.", f"model.layers.{i}."
        out[h + "input_layernorm.weight"] = src[b + "attn_norm.weight"]
        out[h + "post_attention_layernorm.weight"] = src[b + "mlp_norm.weight"]
        out[h + "self_attn.q_proj.weight"] = _to_rotate_half(
            src[b + "attn.wq.weight"], c.n_head, c.head_dim
        )
        out[h + "self_attn.k_proj.weight"] = _to_rotate_half(
            src[b + "attn.wk.weight"], c.kv_heads, c.head_dim
        )
        out[h + "self_attn.v_proj.weight"] = src[b + "attn.wv.weight"]
        out[h + "self_attn.o_proj.weight"] = src[b + "attn.wo.weight"]
        out[h + "mlp.gate_proj.weight"] = src[b + "mlp.w_gate.weight"]
        out[h + "mlp.up_proj.weight"] = src[b + "mlp.w_up.weight"]
        out[h + "mlp.down_proj.weight"] = src[b + "mlp.w_down.weight"]
    # safetensors refuses tensors that share storage; clone() gives each its own.
    return {k: v.to(dtype).contiguous().clone() for k, v in out.items()}


def llama_config(model: GPT, *, eos_id: int, dtype: str) -> dict:
    """config.json for ``LlamaForCausalLM``, readable by transformers 4.x and 5.x."""
    c = model.config
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": c.vocab_size,
        "hidden_size": c.d_model,
        "intermediate_size": c.hidden,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.kv_heads,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": c.block_size,
        "rms_norm_eps": c.norm_eps,
        # transformers 5 reads rope_parameters, 4.x reads rope_theta.
        "rope_theta": c.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
        "tie_word_embeddings": c.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        # kiln's documents are separated by one end-of-document token and have no separate
        # begin token; padding reuses it, as GPT-2 does.
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "pad_token_id": eos_id,
        "torch_dtype": dtype,
        "use_cache": True,
    }


def export_hf(final_dir: str | Path, out_dir: str | Path, *, dtype: str = "float32") -> Path:
    """Write a Llama-format folder for the exported checkpoint in ``final_dir``."""
    from safetensors.torch import save_file

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)} (got {dtype!r})")
    model, tokenizer, meta = load_final(final_dir)
    eos_token = checkpoint_eos_token(meta)
    eos_id = tokenizer.token_to_id(eos_token)
    if eos_id is None:
        raise ValueError(f"the tokenizer in {final_dir} has no {eos_token} token")
    out_dir = Path(out_dir)
    with staging_dir(out_dir) as folder:
        save_file(
            llama_state_dict(model, DTYPES[dtype]),
            str(folder / "model.safetensors"),
            metadata={"format": "pt"},
        )
        atomic_write_json(folder / "config.json", llama_config(model, eos_id=eos_id, dtype=dtype))
        atomic_write_json(
            folder / "generation_config.json",
            {"bos_token_id": eos_id, "eos_token_id": eos_id, "pad_token_id": eos_id},
        )
        tokenizer.save(str(folder / "tokenizer.json"))
        special = {"bos_token": eos_token, "eos_token": eos_token, "pad_token": eos_token}
        atomic_write_json(
            folder / "tokenizer_config.json",
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "model_max_length": model.config.block_size,
                "clean_up_tokenization_spaces": False,
                **special,
            },
        )
        atomic_write_json(folder / "special_tokens_map.json", special)
        if meta:
            atomic_write_json(folder / "kiln_meta.json", meta)
    log.info("exported %s to %s (Llama format, %s)", final_dir, out_dir, dtype)
    return out_dir
