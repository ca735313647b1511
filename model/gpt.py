"""A GPT decoder: rotary positions, RMSNorm, SwiGLU MLP, grouped-query attention, tied embeddings.

The architecture follows the Llama family (Touvron et al., 2023): pre-norm blocks with RMSNorm,
rotary position embeddings (Su et al., 2021) on queries and keys, a SwiGLU feed-forward layer
(Shazeer, 2020) and optional grouped-query attention (Ainslie et al., 2023), where several query
heads share one key/value head. Attention is causal ``scaled_dot_product_attention``, which
picks a fused kernel where the hardware has one.

The forward pass takes an optional key/value cache so generation feeds one new token per step
instead of the whole sequence (see model/generate.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

__all__ = ["GPT", "GPTConfig", "KVCache"]


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int = 256  # longest sequence, tokens
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None  # key/value heads; None = n_head (plain multi-head attention)
    d_model: int = 128
    ffn_hidden: int | None = None  # SwiGLU width; None = 8/3 d_model rounded up to 64
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    dropout: float = 0.0
    tie_embeddings: bool = True

    def __post_init__(self):
        if self.d_model % self.n_head:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_head {self.n_head}")
        kv = self.kv_heads
        if self.n_head % kv:
            raise ValueError(f"n_head {self.n_head} is not divisible by n_kv_head {kv}")
        if (self.d_model // self.n_head) % 2:
            raise ValueError("head dimension must be even for rotary embeddings")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def hidden(self) -> int:
        if self.ffn_hidden:
            return self.ffn_hidden
        # 8/3 d keeps SwiGLU's three matrices at the parameter count of a 4d two-matrix MLP.
        return 64 * math.ceil(8 * self.d_model / 3 / 64)

    def to_dict(self) -> dict:
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 for stability under bf16, then cast back.
        norm = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return norm.type_as(x) * self.weight


def rope_tables(seq_len: int, head_dim: int, theta: float, device=None):
    """cos and sin tables of shape (seq_len, head_dim // 2)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    angles = torch.outer(torch.arange(seq_len, device=device).float(), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[2i], x[2i+1]) of each head by position-dependent angles.

    x: (B, H, T, D); cos, sin: (T, D/2), or (B, 1, T, D/2) when each row has its own positions.
    """
    x1, x2 = x.float()[..., 0::2], x.float()[..., 1::2]  # (B, H, T, D/2) each
    rotated = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)


class KVCache:
    """Keys and values of the tokens seen so far, per layer, for incremental decoding."""

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int, device, dtype):
        shape = (batch_size, config.kv_heads, max_len, config.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.length = 0  # tokens already in the cache
        self.max_len = max_len

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Append this step's keys/values and return all of them so far."""
        t = k.shape[2]
        end = self.length + t
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} tokens; {end} needed")
        self.k[layer][:, :, self.length : end] = k
        self.v[layer][:, :, self.length : end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


class Attention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.config = config
        self.layer = layer
        hd = config.head_dim
        self.wq = nn.Linear(config.d_model, config.n_head * hd, bias=False)
        self.wk = nn.Linear(config.d_model, config.kv_heads * hd, bias=False)
        self.wv = nn.Linear(config.d_model, config.kv_heads * hd, bias=False)
        self.wo = nn.Linear(config.n_head * hd, config.d_model, bias=False)

    def forward(self, x, cos, sin, cache: KVCache | None = None, key_mask=None):
        """``key_mask`` (B, past + T), True for real tokens, marks left padding: no query
        attends to a padding key (a padding query still attends to itself, so its row of the
        softmax is never all -inf, which would put NaN into the values later steps read)."""
        B, T, _ = x.shape
        c = self.config
        q = self.wq(x).view(B, T, c.n_head, c.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.wk(x).view(B, T, c.kv_heads, c.head_dim).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.wv(x).view(B, T, c.kv_heads, c.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        past = cache.length if cache is not None else 0
        if cache is not None:
            k, v = cache.update(self.layer, k, v)  # (B, Hkv, past + T, D)
        if c.kv_heads != c.n_head:
            # Grouped-query attention: each key/value head serves n_head / kv_heads query heads.
            repeat = c.n_head // c.kv_heads
            k = k.repeat_interleave(repeat, dim=1)
            v = v.repeat_interleave(repeat, dim=1)
        if key_mask is not None:
            total = past + T
            causal = torch.ones(T, total, dtype=torch.bool, device=x.device).tril(diagonal=past)
            own = torch.zeros_like(causal)
            own[:, past:] = torch.eye(T, dtype=torch.bool, device=x.device)
            mask = causal & (key_mask[:, None, None, :] | own)  # (B, 1, T, total)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        elif past == 0:
            y = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, dropout_p=c.dropout if self.training else 0.0
            )
        else:
            # New tokens see every cached token and, causally, each other.
            total = past + T
            mask = torch.ones(T, total, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, c.n_head * c.head_dim)
        return self.wo(y)


class SwiGLU(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.w_gate = nn.Linear(config.d_model, config.hidden, bias=False)
        self.w_up = nn.Linear(config.d_model, config.hidden, bias=False)
        self.w_down = nn.Linear(config.hidden, config.d_model, bias=False)

    def forward(self, x):
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer: int):
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attn = Attention(config, layer)
        self.mlp_norm = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = SwiGLU(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, cos, sin, cache=None, key_mask=None):
        x = x + self.dropout(self.attn(self.attn_norm(x), cos, sin, cache, key_mask))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        # Recompute each block's activations in the backward pass instead of keeping them:
        # memory per block drops to its input, at the cost of one more forward pass.
        self.activation_checkpointing = False
        cos, sin = rope_tables(config.block_size, config.head_dim, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # GPT-2's scaled init for projections that write into the residual stream: keeps its
        # variance from growing with depth (Radford et al., 2019).
        for name, p in self.named_parameters():
            if name.endswith(("wo.weight", "w_down.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.tok_emb.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token: 6N for the matmuls plus the attention term.

        The attention term (12 * n_layer * d_model * seq_len: QK^T and attention-weighted V,
        forward and backward) follows the PaLM paper's MFU accounting (Chowdhery et al., 2022,
        appendix B). It counts the full attention matrix although a causal mask needs only half
        of it, as PaLM does, so figures compare with published MFU numbers. N is the parameters
        that take part in a matmul: every one but the embedding lookup (which costs no FLOPs),
        with the output projection counted once whether or not it shares the embedding's
        weights.
        """
        c = self.config
        seq_len = seq_len or c.block_size
        n_matmul = self.num_params(non_embedding=True)
        if c.tie_embeddings:
            n_matmul += c.vocab_size * c.d_model  # the shared matrix, used as the output layer
        return 6 * n_matmul + 12 * c.n_layer * c.d_model * seq_len

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache=None,
        attention_mask: torch.Tensor | None = None,
    ):
        """idx: (B, T) token ids. Returns logits (B, T, V) and, given targets, the mean loss.

        ``attention_mask`` (B, past + T), 1 for real tokens and 0 for left padding, lets rows of
        different lengths share a batch: each row's positions count from its first real token,
        so a padded row gives the logits it would give alone.
        """
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(
                f"sequence of {start + T} tokens exceeds block_size {self.config.block_size}"
            )
        x = self.tok_emb(idx)  # (B, T, d)
        key_mask = None
        if attention_mask is None:
            cos = self.rope_cos[start : start + T]
            sin = self.rope_sin[start : start + T]
        else:
            key_mask = attention_mask.bool()
            if key_mask.shape != (B, start + T):
                raise ValueError(
                    f"attention_mask has shape {tuple(key_mask.shape)}; expected {(B, start + T)}"
                )
            positions = (key_mask.long().cumsum(-1) - 1).clamp(min=0)[:, start:]  # (B, T)
            cos = self.rope_cos[positions][:, None]  # (B, 1, T, D/2)
            sin = self.rope_sin[positions][:, None]
        for block in self.blocks:
            if self.activation_checkpointing and self.training and cache is None:
                x = checkpoint(block, x, cos, sin, None, key_mask, use_reentrant=False)
            else:
                x = block(x, cos, sin, cache, key_mask)
        if cache is not None:
            cache.length += T
        logits = self.lm_head(self.norm(x))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss
