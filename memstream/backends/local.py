"""Local chat backend: load a Llama-family checkpoint, then prefill -> decode one token at a time.

Loading goes through transformers (GGUF is de-quantised by transformers; safetensors folders
load as they are), and the weights are moved into our own `Transformer` (llama.py). The
tokenizer and chat template are the checkpoint's own.

Generation (after gpt-fast's generate.py) is small functions: `prefill` (in chunks, through
the attention policy), `decode_one`, `decode_tokens` (the decode loop as an iterator) and
`decode_n` with a token callback over it; `LocalBackend` runs the same loop and adds only what
serving needs: the chat template, streaming text, stop strings, sampling options, the prompt cache.

Context policy: a prompt that does not leave room for one new token raises
`ContextOverflowError` (nothing is truncated silently: the agent decides what to drop);
`max_tokens` is clipped to the room left in the window.

Prompt cache (like llama.cpp's): under dense attention the backend keeps the KV caches of its
last few generations (`prompt_cache_slots`) with the token ids each holds. A new prompt reuses
the longest common prefix with one of them (at most all but its last token, which must be
prefilled for logits) and prefills only the rest, so questions over one long shared history
skip re-reading it. Policies that evict or compress the prompt cache (sink_window, snapkv,
block_topk's representatives) always prefill in full (`AttentionPolicy.reuses_prefix`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from memstream.backends.base import (
    ContextOverflowError,
    GenerationOptions,
    Message,
    ModelNotFoundError,
    check_messages,
    options_from,
)
from memstream.backends.kernels import AttentionPolicy
from memstream.backends.kernels.dense import DensePolicy
from memstream.backends.kv_cache import PagedKVCache
from memstream.backends.llama import ModelArgs, Transformer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_END_MARKERS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "</s>")


@dataclass
class LocalModel:
    """Loaded weights + tokenizer; shared by every LocalBackend that uses the same checkpoint."""

    name: str
    model: Transformer
    tokenizer: object  # a transformers tokenizer
    stop_token_ids: frozenset[int]
    context_window: int
    device: torch.device

    @property
    def args(self) -> ModelArgs:
        return self.model.args


def pick_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_hf(path: Path, gguf_file: str | None = None, dtype: str = "float32"):
    """The transformers model and tokenizer for a GGUF file (in folder `path`) or an HF folder.

    Raises ModelNotFoundError naming the file when it is missing or cannot be read.
    """
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = path / gguf_file if gguf_file else path
    if not target.exists():
        raise ModelNotFoundError(f"model file {target} does not exist")
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    # transformers 5 renamed torch_dtype to dtype.
    dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), **kwargs)
        hf_model = AutoModelForCausalLM.from_pretrained(str(path), **{dtype_key: DTYPES[dtype]}, **kwargs)
    except (OSError, ValueError, KeyError, EOFError, RuntimeError, TypeError) as exc:
        # GGUF parse errors surface as ValueError/KeyError/EOFError; a bad folder as OSError.
        raise ModelNotFoundError(f"cannot load model {target}: corrupt or unsupported file ({type(exc).__name__}: {exc})") from exc
    return hf_model.eval(), tokenizer


def stop_token_ids(tokenizer, config) -> frozenset[int]:
    """Token ids that end a reply: the checkpoint's EOS ids plus the usual end-of-turn markers."""
    ids: set[int] = set()
    for source in (config.eos_token_id, tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(source)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[marker] for marker in _END_MARKERS if marker in vocab)
    return frozenset(ids)


def from_hf(hf_model, tokenizer, name: str, device: str | None = None, context_window: int | None = None) -> LocalModel:
    """Move a transformers Llama model's weights into our Transformer."""
    try:
        args = ModelArgs.from_hf_config(hf_model.config)
    except ValueError as exc:
        raise ModelNotFoundError(f"cannot run {name} locally: {exc}") from exc
    if tokenizer.chat_template is None:
        raise ModelNotFoundError(f"model {name} has no chat template; use an instruct/chat checkpoint")
    target = pick_device(device)
    model = Transformer.from_hf_state_dict(args, hf_model.state_dict()).to(target)
    model.setup_rope(target)
    window = min(context_window or args.max_seq_len, args.max_seq_len)
    return LocalModel(name, model, tokenizer, stop_token_ids(tokenizer, hf_model.config), window, target)


def load_local_model(
    path: str, gguf_file: str | None = None, dtype: str = "float32", device: str | None = None, name: str | None = None
) -> LocalModel:
    """Load a checkpoint for local generation (uncached; see models.load_cached for the per-process cache)."""
    hf_model, tokenizer = load_hf(Path(path), gguf_file, dtype)
    return from_hf(hf_model, tokenizer, name or Path(gguf_file or path).stem, device)


# --- generation: prefill, decode_one, decode_n --------------------------------------------


def new_cache(model: Transformer, policy: AttentionPolicy, max_tokens: int, device=None) -> PagedKVCache:
    """An empty cache for one sequence of up to max_tokens under `policy` (an evicting policy gets a bounded pool)."""
    a = model.args
    return PagedKVCache(a.n_layers, a.n_kv_heads, a.head_dim, policy.params.block_size, max_tokens,
                        dtype=model.output.weight.dtype, device=device, pool_tokens=policy.cache_tokens(max_tokens))


@torch.inference_mode()
def prefill(model: Transformer, tokens: torch.Tensor, cache: PagedKVCache, policy: AttentionPolicy | None = None,
            all_logits: bool = False, chunk: int | None = None) -> torch.Tensor:
    """Run the prompt tokens [1, T] through the model into the cache; logits [1, V] (or [1, T, V]).

    The prompt goes in chunks of `chunk` tokens (default policy.params.prefill_chunk), each
    attending through the policy, so a sparse policy is sparse from the first token and the
    activations stay bounded. The cache may already hold earlier tokens (a reused prompt
    prefix, or an earlier turn): the tokens continue at the cache's next position.
    """
    policy = policy or DensePolicy()
    chunk = chunk or policy.params.prefill_chunk
    start = int(cache.positions[0])
    outs = []
    for first in range(0, tokens.shape[1], chunk):
        part = tokens[:, first : first + chunk]
        positions = torch.arange(start + first, start + first + part.shape[1], device=tokens.device)[None]  # [1, C]
        last = first + chunk >= tokens.shape[1]
        if all_logits or last:
            outs.append(model(part, positions, cache, decode=False, policy=policy, all_logits=all_logits))
        else:
            model(part, positions, cache, decode=False, policy=policy)
    policy.finish_prefill(cache)
    return torch.cat(outs, dim=1) if all_logits else outs[-1]


@torch.inference_mode()
def decode_one(model: Transformer, token: torch.Tensor, cache: PagedKVCache,
               policy: AttentionPolicy | None = None) -> torch.Tensor:
    """One decode step for token [B, 1] at the cache's next positions; logits [B, V]."""
    positions = cache.positions[:, None].clone()  # [B, 1]
    return model(token, positions, cache, decode=True, policy=policy or DensePolicy())


def sample(logits: torch.Tensor, temperature: float = 0.0, top_p: float = 1.0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Next token ids [B] from logits [B, V]: greedy at temperature 0, else temperature + nucleus sampling."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token always survives).
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def decode_tokens(model: Transformer, first_token: int, n: int, cache: PagedKVCache,
                  next_token: Callable[[torch.Tensor], torch.Tensor],
                  policy: AttentionPolicy | None = None) -> Iterator[int]:
    """Yield up to n tokens (batch 1): `first_token` (sampled from the prefill logits) first, then one
    per decode step; each is fed back before the next is computed. Stop iterating to stop decoding;
    after k tokens are taken the cache holds the keys/values of the first k - 1."""
    token = torch.tensor([[first_token]], device=cache.block_table.device)
    new = first_token
    for step in range(n):
        if step:
            token.fill_(new)
            new = int(next_token(decode_one(model, token, cache, policy))[0])
        yield new


def decode_n(model: Transformer, first_token: int, n: int, cache: PagedKVCache,
             next_token: Callable[[torch.Tensor], torch.Tensor],
             callback: Callable[[int], bool] = lambda token: True,
             policy: AttentionPolicy | None = None) -> list[int]:
    """Decode up to n tokens after `first_token` (batch 1); stop early when callback(token) is False.

    `first_token` (already sampled from the prefill logits) is fed, not returned (gpt-fast's shape).
    """
    produced: list[int] = []
    tokens = decode_tokens(model, first_token, n + 1, cache, next_token, policy)
    next(tokens)  # first_token itself
    for token in tokens:
        produced.append(token)
        if not callback(token):
            break
    return produced


# --- text streaming -------------------------------------------------------------------------


class TextStream:
    """Turns generated token ids into text pieces that are safe to show.

    Holds back a trailing partial UTF-8 character and any tail that could be the start of
    a stop string; once a stop string appears, the text before it is the end of the reply.
    """

    def __init__(self, tokenizer, stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.ids: list[int] = []
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # a multi-byte character is still incomplete
            return ""
        self.text = text
        hits = [i for i in (text.find(s, max(0, self.emitted - len(s))) for s in self.stop) if i >= 0]
        if hits:
            self.stopped = True
            return self._emit_to(min(hits))
        hold = max((k for s in self.stop for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        return self._emit_to(len(text) - hold)

    def flush(self) -> str:
        """The held-back tail, once generation ended without a stop string."""
        return "" if self.stopped else self._emit_to(len(self.text))

    def _emit_to(self, end: int) -> str:
        piece = self.text[self.emitted : max(end, self.emitted)]
        self.emitted = max(end, self.emitted)
        return piece


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    prefilled_tokens: int = 0
    """Prompt tokens run through prefill: prompt_tokens - reused_tokens."""
    reused_tokens: int = 0
    """Prompt tokens whose keys/values came from an earlier generation's kept cache (prompt cache)."""
    completion_tokens: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    finish_reason: str = "stop"
    """'stop' (end token or stop string) or 'length' (max_tokens or the context window)."""


@dataclass
class PromptCache:
    """A finished generation's KV cache and the token ids whose keys/values it holds, in order."""

    cache: PagedKVCache
    ids: list[int]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token id sequences."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def encode_chat(tokenizer, messages: Sequence[Message]) -> list[int]:
    """Prompt token ids through the checkpoint's chat template, ending with the assistant header."""
    text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def count_tokens(tokenizer, text_or_messages: str | Sequence[Message]) -> int:
    """Tokens of a text, or of a chat prompt as the model reads it (template included)."""
    if isinstance(text_or_messages, str):
        return len(tokenizer(text_or_messages, add_special_tokens=False)["input_ids"])
    check_messages(text_or_messages)
    return len(encode_chat(tokenizer, text_or_messages))


@dataclass
class LocalBackend:
    """ChatBackend over a LocalModel.

    Generations may run from several threads (the server queues them on one worker; a benchmark
    may not): the model is read-only, each generation owns its KV cache, and the caches kept for
    reuse are taken and handed back under a lock, so a generation never shares a cache with another.
    """

    local: LocalModel
    policy: AttentionPolicy = field(default_factory=DensePolicy)
    """Built from the config by kernels.policy_from_settings (models.make_backend)."""
    seed: int | None = None
    context_limit: int | None = None
    """Use fewer tokens than the model's window (BackendSettings.context_window); with a policy that keeps
    distances in range (`AttentionPolicy.reads_past_window`: sink_window, block_topk), more."""
    prompt_cache_slots: int = 2
    """KV caches of recent generations kept to reuse a shared prompt prefix (dense policy only); 0: off."""
    last_stats: GenerationStats = field(default_factory=GenerationStats)

    def __post_init__(self) -> None:
        self._kept: list[PromptCache] = []  # least recently used first
        self._lock = threading.Lock()
        if not isinstance(self.policy, AttentionPolicy):
            raise TypeError(f"policy must be an AttentionPolicy (kernels.make_policy), got {self.policy!r}")
        self.name = self.local.name
        trained = self.local.context_window
        if self.policy.reads_past_window and self.context_limit:
            self.context_window = self.context_limit
            if self.context_window > self.local.model.rope_cos.shape[0]:
                # Longer tables only add positions; the ones other backends use keep their values.
                self.local.model.setup_rope(self.local.device, max_positions=self.context_window)
        else:
            self.context_window = min(self.context_limit or trained, trained)
        self.generator = torch.Generator(device=self.local.device)
        if self.seed is not None:
            self.generator.manual_seed(self.seed)
        else:
            self.generator.seed()

    def encode(self, messages: Sequence[Message]) -> list[int]:
        return encode_chat(self.local.tokenizer, messages)

    def count_tokens(self, text_or_messages: str | Sequence[Message]) -> int:
        return count_tokens(self.local.tokenizer, text_or_messages)

    def stream(self, messages: Sequence[Message], **opts) -> Iterator[str]:
        check_messages(messages)
        options = options_from(opts)
        prompt = self.encode(messages)
        # Validate before the generator starts, so bad input fails at the call, not at first next().
        room = self.context_window - len(prompt)
        if room < 1:
            raise ContextOverflowError(
                f"prompt is {len(prompt)} tokens but {self.name}'s context window is {self.context_window} "
                "(one token must be left for the reply): shorten the conversation or its retrieved context"
            )
        return self._generate(prompt, options, min(options.max_tokens, room))

    @property
    def reuses_prompts(self) -> bool:
        """Whether generations keep their KV cache for later prompts (slots > 0, dense attention)."""
        return self.prompt_cache_slots > 0 and self.policy.reuses_prefix

    def clear_prompt_cache(self) -> None:
        """Drop the kept KV caches (frees their memory; the next prompt is prefilled in full)."""
        with self._lock:
            self._kept = []

    def _take_cache(self, prompt: list[int], max_tokens: int) -> tuple[PagedKVCache, int]:
        """A cache for this generation and how many leading prompt tokens it already holds.

        The kept cache sharing the longest prefix with the prompt is chosen under the lock; the
        prefix is capped below the prompt's length so at least one token is prefilled for the
        next-token logits. When the prompt extends most of that cache, the cache is taken out and
        truncated in place (a concurrent generation no longer sees it); otherwise its prefix is
        copied and it stays kept, so one short shared header does not destroy a long history.
        """
        local = self.local
        if self.reuses_prompts:
            with self._lock:
                best, reused = None, 0
                for kept in self._kept:
                    n = min(common_prefix(kept.ids, prompt), len(prompt) - 1)
                    if n >= reused and n > 0:  # ties go to the most recent
                        best, reused = kept, n
                if best is not None and 2 * reused >= len(best.ids):
                    self._kept.remove(best)
                    best.cache.truncate(reused)
                    cache = best.cache
                    return (cache if cache.capacity >= max_tokens else cache.copy_prefix(reused, max_tokens)), reused
                if best is not None:
                    return best.cache.copy_prefix(reused, max_tokens), reused
        return new_cache(local.model, self.policy, max_tokens, local.device), 0

    def _keep_cache(self, cache: PagedKVCache, ids: list[int]) -> None:
        with self._lock:
            self._kept.append(PromptCache(cache, ids))
            del self._kept[: max(0, len(self._kept) - self.prompt_cache_slots)]

    def _generate(self, prompt: list[int], options: GenerationOptions, max_new: int) -> Iterator[str]:
        local = self.local
        stats = self.last_stats = GenerationStats(prompt_tokens=len(prompt), finish_reason="length")
        text = TextStream(local.tokenizer, options.stop)

        def next_token(logits: torch.Tensor) -> torch.Tensor:
            return sample(logits, options.temperature, options.top_p, self.generator)

        start = time.perf_counter()
        cache, reused = self._take_cache(prompt, len(prompt) + max_new)
        stats.reused_tokens, stats.prefilled_tokens = reused, len(prompt) - reused
        # The cache holds the prompt and every taken token but the last while `intact` holds; a
        # forward pass that raises part-way leaves the cache unusable, and it is then not kept.
        taken: list[int] = []
        intact = False
        try:
            tokens = torch.tensor([prompt[reused:]], device=local.device)
            logits = prefill(local.model, tokens, cache, self.policy)
            intact = True
            stats.prefill_s = time.perf_counter() - start
            start = time.perf_counter()
            stream = decode_tokens(local.model, int(next_token(logits)[0]), max_new, cache, next_token, self.policy)
            while True:
                intact = False
                token = next(stream, None)
                intact = True
                if token is None:
                    break
                taken.append(token)
                if token in local.stop_token_ids:
                    stats.finish_reason = "stop"
                    break
                stats.completion_tokens += 1
                piece = text.push(token)
                if piece:
                    yield piece
                if text.stopped:
                    stats.finish_reason = "stop"
                    break
            tail = text.flush()
            if tail:
                yield tail
            stats.decode_s = time.perf_counter() - start
        finally:
            # Also when the consumer stops early (GeneratorExit at a yield: no forward pass is running).
            if intact and self.reuses_prompts:
                self._keep_cache(cache, list(prompt) + taken[:-1])

    def complete(self, messages: Sequence[Message], **opts) -> str:
        return "".join(self.stream(messages, **opts))
