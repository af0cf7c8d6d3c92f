"""A tiny random Llama (2 layers, 6 query / 2 KV heads, 128-token vocabulary) for fast kernel and runner tests."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from memstream.backends.llama import ModelArgs, Transformer


def tiny_llama(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=96, intermediate_size=128, num_hidden_layers=2, num_attention_heads=6,
                         num_key_value_heads=2, vocab_size=128, max_position_embeddings=512)
    ours = Transformer.from_hf_state_dict(ModelArgs.from_hf_config(config), LlamaForCausalLM(config).eval().state_dict())
    ours.setup_rope()
    return ours
