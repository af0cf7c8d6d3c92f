"""The Llama architecture in one readable file (after gpt-fast's model.py).

Shapes: B batch, T new tokens, D model dim, H query heads, Hkv key/value heads,
Dh head dim, V vocab. Weights come from a transformers model (`from_hf_state_dict`)
with q/k/v and gate/up fused so a decode step runs two matmuls per block instead of five.

Attention goes through the policy object (`memstream.backends.kernels.AttentionPolicy`),
the single place where sparse-attention policies plug in, on two paths with different
bottlenecks:
- prefill (`forward(..., decode=False)`): a chunk of prompt tokens is written into the paged
  cache and attends through `policy.attend_prefill` (dense: causal over everything cached;
  sparse policies: what a decode step at each position would read);
- decode (`decode=True`, one token per sequence): `policy.attend_decode`.
Keys are cached after RoPE, so a policy may drop cached tokens without re-rotating, and may
move a cached key to another position by rotating it by the difference (`kernels.Rope`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from memstream.backends.kernels import AttentionPolicy, Rope
from memstream.backends.kernels.dense import DensePolicy
from memstream.backends.kv_cache import PagedKVCache

SUPPORTED_MODEL_TYPES = ("llama", "mistral")


@dataclass
class ModelArgs:
    dim: int = 576
    n_layers: int = 30
    n_heads: int = 9
    n_kv_heads: int = 3
    head_dim: int = 64
    intermediate_size: int = 1536
    vocab_size: int = 49152
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] = field(default_factory=dict)
    """transformers' rope_parameters / rope_scaling: rope_type 'default', 'linear' or 'llama3'."""
    max_seq_len: int = 8192
    tie_embeddings: bool = True

    @classmethod
    def from_hf_config(cls, config) -> "ModelArgs":
        model_type = getattr(config, "model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"model type {model_type!r} is not a Llama-family model the local runner supports "
                f"({', '.join(SUPPORTED_MODEL_TYPES)}); serve it with vLLM/llama.cpp and use backend.kind='openai'"
            )
        if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
            raise ValueError("models with attention/MLP biases are not supported by the local runner")
        # transformers >= 5 keeps theta and scaling together in rope_parameters; older ones split them.
        rope = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
        theta = rope.pop("rope_theta", None) or getattr(config, "rope_theta", 10000.0)
        n_heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
        return cls(
            dim=config.hidden_size,
            n_layers=config.num_hidden_layers,
            n_heads=n_heads,
            n_kv_heads=getattr(config, "num_key_value_heads", None) or n_heads,
            head_dim=head_dim,
            intermediate_size=config.intermediate_size,
            vocab_size=config.vocab_size,
            norm_eps=config.rms_norm_eps,
            rope_theta=float(theta),
            rope_scaling=rope,
            max_seq_len=config.max_position_embeddings,
            tie_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        )


def rope_inv_freq(args: ModelArgs) -> torch.Tensor:
    """Inverse frequencies [Dh/2], scaled as the checkpoint's rope_type says."""
    dh = args.head_dim
    inv_freq = 1.0 / (args.rope_theta ** (torch.arange(0, dh, 2, dtype=torch.float64) / dh))
    kind = args.rope_scaling.get("rope_type", args.rope_scaling.get("type", "default"))
    if kind == "default":
        return inv_freq.float()
    if kind == "linear":
        return (inv_freq / args.rope_scaling["factor"]).float()
    if kind == "llama3":
        # Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, a smooth ramp between.
        s = args.rope_scaling
        factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
        old_len = s["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        smooth = (old_len / wavelen - low) / (high - low)
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        mid = (wavelen <= old_len / low) & (wavelen >= old_len / high)
        scaled = torch.where(mid, (1 - smooth) * inv_freq / factor + smooth * inv_freq, scaled)
        return scaled.float()
    raise ValueError(f"rope_type {kind!r} is not supported by the local runner (supported: default, linear, llama3)")


def rope_tables(args: ModelArgs, length: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed-sin tables [length, Dh] for the half-split layout transformers uses.

    transformers rotates with rotate_half(x) = [-x2, x1]; rolling x by half gives [x2, x1], so
    folding the minus into the first half of sin makes RoPE three ops: x*cos + roll(x)*sin.
    """
    inv_freq = rope_inv_freq(args).to(device)
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)  # [L, Dh/2]
    sin = angles.sin()
    return torch.cat([angles, angles], dim=-1).cos(), torch.cat([-sin, sin], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """x [B, heads, T, Dh]; cos/signed_sin [B or 1, 1, T, Dh] from rope_tables."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), signed_sin)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:  # one fused op; the same arithmetic as below
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        # Half precision: normalise in float32 like the reference, then scale in the weights' dtype.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs, layer_idx: int):
        super().__init__()
        self.args = args
        self.layer_idx = layer_idx
        q_size, kv_size = args.n_heads * args.head_dim, args.n_kv_heads * args.head_dim
        self.split = (q_size, kv_size, kv_size)
        self.wqkv = nn.Linear(args.dim, q_size + 2 * kv_size, bias=False)
        self.wo = nn.Linear(q_size, args.dim, bias=False)

    def forward(
        self,
        x: torch.Tensor,  # [B, T, D]
        cos: torch.Tensor,  # [B or 1, 1, T, Dh]
        sin: torch.Tensor,
        cache: PagedKVCache,
        decode: bool,
        policy: AttentionPolicy,
        rope: Rope,
    ) -> torch.Tensor:
        a = self.args
        bsz, t, _ = x.shape
        qk, v = self.wqkv(x).split((self.split[0] + self.split[1], self.split[2]), dim=-1)
        # Rotate queries and keys in one go: [B, H + Hkv, T, Dh].
        qk = apply_rope(qk.view(bsz, t, a.n_heads + a.n_kv_heads, a.head_dim).transpose(1, 2), cos, sin)
        q, k = qk.split((a.n_heads, a.n_kv_heads), dim=1)  # [B, H, T, Dh], [B, Hkv, T, Dh]
        v = v.view(bsz, t, a.n_kv_heads, a.head_dim).transpose(1, 2)  # [B, Hkv, T, Dh]
        cache.write(self.layer_idx, k, v)
        if decode:
            out = policy.attend_decode(q[:, :, 0], cache, self.layer_idx, rope)  # [B, H, Dh]
            out = out.reshape(bsz, 1, a.n_heads * a.head_dim)
        else:
            if bsz != 1:
                raise ValueError(f"prefill runs one sequence at a time, got batch {bsz}")
            out = policy.attend_prefill(q, cache, self.layer_idx, rope)  # [1, H, T, Dh]
            out = out.transpose(1, 2).reshape(bsz, t, a.n_heads * a.head_dim)
        return self.wo(out)


class FeedForward(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.hidden = args.intermediate_size
        self.w13 = nn.Linear(args.dim, 2 * args.intermediate_size, bias=False)  # gate and up, fused
        self.w2 = nn.Linear(args.intermediate_size, args.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).split(self.hidden, dim=-1)
        return self.w2(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, args: ModelArgs, layer_idx: int):
        super().__init__()
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.attention = Attention(args, layer_idx)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)
        self.feed_forward = FeedForward(args)

    def forward(self, x, cos, sin, cache, decode, policy, rope):
        h = x + self.attention(self.attention_norm(x), cos, sin, cache, decode, policy, rope)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(Block(args, i) for i in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        # Buffers (not saved) so .to(device) moves them with the weights.
        self.register_buffer("rope_cos", None, persistent=False)
        self.register_buffer("rope_sin", None, persistent=False)

    def setup_rope(self, device=None, max_positions: int | None = None) -> None:
        """Precompute cos/sin for every position of the context window, or for `max_positions`
        (a longer context, for policies that keep distances in range; call after loading weights)."""
        cos, sin = rope_tables(self.args, max(self.args.max_seq_len, max_positions or 0), device)
        dtype = self.output.weight.dtype
        self.rope_cos, self.rope_sin = cos.to(dtype), sin.to(dtype)

    def forward(
        self,
        tokens: torch.Tensor,  # [B, T] int64
        positions: torch.Tensor,  # [B, T] int64, absolute positions (RoPE)
        cache: PagedKVCache,
        decode: bool = False,
        policy: AttentionPolicy | None = None,
        all_logits: bool = False,
    ) -> torch.Tensor:
        """Logits [B, V] for the last position, or [B, T, V] with all_logits."""
        assert self.rope_cos is not None, "call setup_rope() after loading weights"
        if decode and tokens.shape[1] != 1:
            raise ValueError(f"decode takes one token per sequence, got {tokens.shape[1]}")
        # Checked on prefill only: on CUDA the check is a host sync, which a decode step must not pay.
        if not decode and int(positions.max()) >= self.rope_cos.shape[0]:
            raise ValueError(f"position {int(positions.max())} is past the RoPE tables ({self.rope_cos.shape[0]} positions): "
                             "call setup_rope(max_positions=...) for a longer context")
        policy = policy or DensePolicy()
        rope = Rope(self.rope_cos, self.rope_sin)
        cos = self.rope_cos[positions].unsqueeze(1)  # [B, 1, T, Dh]
        sin = self.rope_sin[positions].unsqueeze(1)
        x = self.tok_embeddings(tokens)  # [B, T, D]
        cache.begin_write(tokens.shape[1])
        for layer in self.layers:
            x = layer(x, cos, sin, cache, decode, policy, rope)
        cache.end_write()
        if not all_logits:
            x = x[:, -1:]
        logits = self.output(self.norm(x)).float()
        return logits if all_logits else logits[:, -1]

    @classmethod
    def from_hf_state_dict(cls, args: ModelArgs, state: dict[str, torch.Tensor]) -> "Transformer":
        """Build from a transformers LlamaForCausalLM state dict (names like model.layers.0.self_attn.q_proj.weight)."""
        with torch.device("meta"):
            model = cls(args)
        ours: dict[str, torch.Tensor] = {
            "tok_embeddings.weight": state["model.embed_tokens.weight"],
            "norm.weight": state["model.norm.weight"],
        }
        head = state.get("lm_head.weight")
        if head is None or args.tie_embeddings:
            head = state["model.embed_tokens.weight"]
        ours["output.weight"] = head
        for i in range(args.n_layers):
            p = f"model.layers.{i}."
            ours[f"layers.{i}.attention.wqkv.weight"] = torch.cat(
                [state[p + "self_attn.q_proj.weight"], state[p + "self_attn.k_proj.weight"], state[p + "self_attn.v_proj.weight"]]
            )
            ours[f"layers.{i}.attention.wo.weight"] = state[p + "self_attn.o_proj.weight"]
            ours[f"layers.{i}.feed_forward.w13.weight"] = torch.cat(
                [state[p + "mlp.gate_proj.weight"], state[p + "mlp.up_proj.weight"]]
            )
            ours[f"layers.{i}.feed_forward.w2.weight"] = state[p + "mlp.down_proj.weight"]
            ours[f"layers.{i}.attention_norm.weight"] = state[p + "input_layernorm.weight"]
            ours[f"layers.{i}.ffn_norm.weight"] = state[p + "post_attention_layernorm.weight"]
        # assign=True keeps the loaded tensors instead of copying into meta placeholders.
        model.load_state_dict(ours, strict=True, assign=True)
        return model.eval().requires_grad_(False)  # inference only: no autograd bookkeeping on the weights
