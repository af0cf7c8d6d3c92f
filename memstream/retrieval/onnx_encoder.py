"""The sentence-transformers encoder run by ONNX Runtime: the same vectors for less CPU.

For a model whose pipeline is a BERT-style Transformer, mean Pooling and Normalize (all-MiniLM-L6-v2 and its
kin), the transformer is exported to ONNX once, from the weights already on disk (no network), into a cache
folder, and run by onnxruntime; pooling and normalising are done here in numpy. The vectors equal the torch
ones to about 1e-7 (tests/retrieval/test_onnx_encoder.py), so a database's stored vectors stay valid and the
model name recorded next to them does not change. Measured on the 2-core machine (one thread each, batches of
8 short texts): 4.1 ms of CPU per text against 9.8 ms for torch, and 8.0 against 22 ms for a single query.

Any other pipeline (CLS pooling, a Dense layer, prompts) keeps the torch path: `onnx_encoder` returns None
and says why in the log.

`quantize=True` (embedder.runtime "onnx-int8") runs a copy of the export whose MatMul weights are int8, per output
channel (ONNX Runtime's dynamic quantisation, made once from the float export, offline). On the 2-core machine it
costs 2.2x less CPU per text (LoCoMo turns, batches of 16: 6.1 against 14 ms); its vectors are within cosine
0.98 (mean 0.992) of the float ones, so they are recorded under their own model name (`INT8_SUFFIX`) and a
database embedded with one runtime is not searched with the other.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

log = logging.getLogger(__name__)

EXPORT_VERSION = "1"
"""Part of the cache key: bump when the export below changes."""
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
INT8_SUFFIX = "+int8"
"""Appended to the model name recorded beside int8 vectors (they are not the float model's vectors)."""


class OnnxEncoder:
    """Tokenise, run the exported transformer, mean-pool over the attention mask, L2-normalise."""

    def __init__(self, session: Any, tokenizer: Any, max_length: int, inputs: Sequence[str]):
        self.session = session
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.inputs = tuple(inputs)
        self.fast = _truncating_copy(tokenizer, max_length)

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        if not texts:
            return np.empty((0, 0), dtype=np.float32)
        if self.fast is None:
            # Sorted by length so a batch pads to its own longest text, as sentence-transformers does.
            order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
            batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
            padded = [self.tokenizer([texts[i] for i in batch], padding=True, truncation=True, max_length=self.max_length,
                                     return_tensors="np") for batch in batches]
        else:
            encodings = self._encodings(list(texts))
            lengths = [len(e.ids) for e in encodings]
            order = sorted(range(len(texts)), key=lambda i: lengths[i])
            batches = length_batches(order, lengths, batch_size)
            padded = [_pad([encodings[i] for i in batch], self.tokenizer.pad_token_id or 0) for batch in batches]
        parts: list[np.ndarray] = []
        for encoded in padded:
            feed = {name: encoded[name].astype(np.int64) for name in self.inputs}
            hidden = self.session.run(None, feed)[0]
            mask = encoded["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            parts.append(pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None))
        out = np.concatenate(parts).astype(np.float32)
        result = np.empty_like(out)
        result[[i for batch in batches for i in batch]] = out
        return result

    def _encodings(self, texts: list[str]) -> list[Any]:
        """Straight from the Rust tokenizer: the transformers wrapper, all of it under the GIL, cost 328 us for 3
        round texts against 183 us here (74 vs 49 for one); in a GIL profile of 32 concurrent memory chats it was
        the largest single Python frame (7%)."""
        # One text at a time below a handful: the batch call's thread pool costs more than it saves on short lists.
        return self.fast.encode_batch(texts) if len(texts) > 8 else [self.fast.encode(text) for text in texts]


CALL_TOKENS = 16
"""One more model call costs about as much as this many more tokens in a call (int8 MiniLM, 2 cores: about 0.9 ms a
call against 0.06 ms a token)."""


def length_batches(order: Sequence[int], lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """`order` (indices sorted by token length) cut into batches that pad little. The background indexer embeds
    turn keys (~20 tokens) beside round keys (~70) in one call; padded to one width, 8 of each cost 76 ms against
    44 ms in two calls. A text starts a new batch when padding the batch up to it would cost more than a call."""
    batches: list[list[int]] = []
    for i in order:
        batch = batches[-1] if batches else None
        if batch is None or len(batch) >= batch_size or len(batch) * (lengths[i] - lengths[batch[-1]]) > CALL_TOKENS:
            batches.append([i])
        else:
            batch.append(i)
    return batches


def _pad(encodings: Sequence[Any], pad_id: int) -> dict[str, np.ndarray]:
    width = max(len(e.ids) for e in encodings)
    encoded = {
        "input_ids": np.full((len(encodings), width), pad_id, dtype=np.int64),
        "attention_mask": np.zeros((len(encodings), width), dtype=np.int64),
        "token_type_ids": np.zeros((len(encodings), width), dtype=np.int64),
    }
    for row, e in enumerate(encodings):
        encoded["input_ids"][row, :len(e.ids)] = e.ids
        encoded["attention_mask"][row, :len(e.ids)] = e.attention_mask
        encoded["token_type_ids"][row, :len(e.ids)] = e.type_ids
    return encoded


def _truncating_copy(tokenizer: Any, max_length: int) -> Any:
    """The tokenizer's Rust core, truncating at `max_length` and not padding; None for a slow (Python) tokenizer
    or one that pads on the left (the wrapper handles those)."""
    core = getattr(tokenizer, "backend_tokenizer", None)
    if core is None or getattr(tokenizer, "padding_side", "right") != "right":
        return None
    fast = copy.deepcopy(core)
    fast.enable_truncation(max_length)
    fast.no_padding()
    return fast


def onnx_encoder(model: Any, model_path: str, cache_dir: Path, threads: int | None, quantize: bool = False) -> OnnxEncoder | None:
    """An ONNX Runtime encoder equivalent to the loaded SentenceTransformer `model`, or None when this model or
    this install cannot have one (the reason is logged; the caller keeps torch)."""
    reason = _unsupported(model)
    if reason is None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            reason = "onnxruntime is not installed (pip install onnxruntime onnx)"
    if reason is not None:
        log.info("embedding with torch: %s", reason)
        return None
    import onnxruntime as ort

    transformer = model[0]
    inputs = [name for name in INPUTS if name in model.tokenizer.model_input_names]
    path = cache_dir / f"{_cache_key(model_path)}.onnx"
    if not path.exists():
        try:
            _export(transformer.auto_model, model.tokenizer, inputs, path)
        except (ImportError, RuntimeError, OSError, ValueError) as exc:
            log.warning("embedding with torch: exporting the model to ONNX failed (%s)", str(exc).splitlines()[0][:200])
            return None
    if quantize:
        quantized = path.with_name(f"{path.stem}-int8.onnx")
        if not quantized.exists():
            try:
                _quantize(path, quantized)
            except (ImportError, RuntimeError, OSError, ValueError) as exc:
                log.warning("embedding with torch: quantising the ONNX export failed (%s)", str(exc).splitlines()[0][:200])
                return None
        path = quantized
    options = ort.SessionOptions()
    # One thread unless asked: several threads spin for work and, on a busy 2-core machine, cost more CPU than
    # they save (the same holds for torch; see EmbedderSettings.threads).
    options.intra_op_num_threads = threads or 1
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types (a truncated or stale file): fall back
        log.warning("embedding with torch: the ONNX file %s does not load (%s)", path.name, str(exc).splitlines()[0][:200])
        return None
    return OnnxEncoder(session, model.tokenizer, int(model.max_seq_length), inputs)


def _unsupported(model: Any) -> str | None:
    names = [type(module).__name__ for module in model]
    if names[:2] != ["Transformer", "Pooling"] or any(n not in ("Transformer", "Pooling", "Normalize") for n in names):
        return f"the pipeline {names} is not Transformer + mean Pooling (+ Normalize)"
    if getattr(model[1], "pooling_mode", None) != "mean":
        return f"pooling mode {getattr(model[1], 'pooling_mode', None)!r} is not mean"
    if "Normalize" not in names:
        return "the model does not normalise its vectors"
    if getattr(model, "prompts", None) and any(getattr(model, "prompts").values()):
        return "the model uses prompts"
    if not hasattr(model[0], "auto_model"):
        return "the transformer module has no exportable model"
    return None


def _cache_key(model_path: str) -> str:
    """The export depends on the weights and on the libraries that wrote it."""
    import onnxruntime
    import torch

    digest = hashlib.sha256()
    root = Path(model_path)
    weights = sorted(root.glob("*.safetensors")) + sorted(root.glob("*.bin")) if root.is_dir() else []
    for file in weights:
        stat = file.stat()
        digest.update(f"{file.name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
    digest.update(f"{model_path}|{torch.__version__}|{onnxruntime.__version__}|{EXPORT_VERSION}".encode())
    return f"{root.name or 'model'}-{digest.hexdigest()[:16]}"


def _quantize(source: Path, path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _partial_beside(path) as partial:
        # MatMul weights only, one scale per output channel: per-tensor scales cost accuracy (mean cosine 0.954 to
        # the float vectors against 0.992) for no speed.
        quantize_dynamic(str(source), partial, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"])


@contextmanager
def _partial_beside(path: Path) -> Iterator[str]:
    """A temp file beside `path`, renamed onto it when the block succeeds: two processes writing at once never
    leave a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=path.parent, suffix=".onnx.partial")
    os.close(handle)
    try:
        yield partial
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def _export(network: Any, tokenizer: Any, inputs: Sequence[str], path: Path) -> None:
    import torch

    class LastHidden(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(inputs, tensors))).last_hidden_state

    sample = tokenizer(["an example sentence", "a second, longer example sentence"], padding=True, return_tensors="pt")
    axes = {name: {0: "batch", 1: "tokens"} for name in (*inputs, "hidden")}
    with _partial_beside(path) as partial, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on constant folding are not the user's business
        torch.onnx.export(LastHidden(network.eval()), tuple(sample[name] for name in inputs), partial,
                          input_names=list(inputs), output_names=["hidden"], dynamic_axes=axes, opset_version=17,
                          dynamo=False)
