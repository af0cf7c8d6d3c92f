"""The ONNX Runtime path of the embedder gives the torch vectors, is made once and reused, and falls back cleanly."""

from __future__ import annotations

import numpy as np
import pytest

from memstream.retrieval.embedder import SentenceTransformerEmbedder
from memstream.retrieval.errors import EmbedderUnavailable

TEXTS = ["user: I moved to Lisbon last spring.", "Where do I live now?", "", "a " * 400,  # empty, and past 256 tokens
         "[2 May 2023] Caroline: I went to the LGBTQ support group yesterday.\nMelanie: How did it go?"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    cache = tmp_path_factory.mktemp("onnx")
    torch_side = SentenceTransformerEmbedder("all-MiniLM-L6-v2", device="cpu", runtime="torch")
    onnx_side = SentenceTransformerEmbedder("all-MiniLM-L6-v2", device="cpu", runtime="onnx", onnx_cache_dir=str(cache))
    return torch_side, onnx_side, cache


def test_onnx_vectors_equal_torch_vectors(pair):
    torch_side, onnx_side, _ = pair
    assert (torch_side.runtime, onnx_side.runtime) == ("torch", "onnx")
    expected, got = torch_side.embed(TEXTS), onnx_side.embed(TEXTS)
    assert got.shape == expected.shape == (len(TEXTS), 384) and got.dtype == np.float32
    assert np.abs(got - expected).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # Batching and order do not change a text's vector (batches are sorted by length inside).
    one_by_one = np.stack([onnx_side.embed([t])[0] for t in TEXTS])
    assert np.abs(one_by_one - got).max() < 1e-5
    onnx_side.batch_size = 2
    try:
        assert np.abs(onnx_side.embed(TEXTS[::-1])[::-1] - got).max() < 1e-5
    finally:
        onnx_side.batch_size = 64


def test_the_export_is_made_once_and_reused(pair):
    _, onnx_side, cache = pair
    files = sorted(cache.glob("*.onnx"))
    assert len(files) == 1 and not list(cache.glob("*.partial"))
    stamp = files[0].stat().st_mtime_ns
    again = SentenceTransformerEmbedder("all-MiniLM-L6-v2", device="cpu", runtime="auto", onnx_cache_dir=str(cache))
    assert again.runtime == "onnx" and files[0].stat().st_mtime_ns == stamp
    assert np.abs(again.embed(TEXTS[:2]) - onnx_side.embed(TEXTS[:2])).max() < 1e-6


def test_a_broken_export_falls_back_to_torch_and_onnx_only_is_a_clear_error(tmp_path, pair):
    _, onnx_side, cache = pair
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / next(cache.glob("*.onnx")).name).write_bytes(b"not an onnx file")
    fallback = SentenceTransformerEmbedder("all-MiniLM-L6-v2", device="cpu", runtime="auto", onnx_cache_dir=str(broken))
    assert fallback.runtime == "torch"
    assert np.abs(fallback.embed(TEXTS[:2]) - onnx_side.embed(TEXTS[:2])).max() < 1e-5
    with pytest.raises(EmbedderUnavailable, match="cannot run on ONNX Runtime"):
        SentenceTransformerEmbedder("all-MiniLM-L6-v2", device="cpu", runtime="onnx", onnx_cache_dir=str(broken))
    with pytest.raises(ValueError, match="runtime must be"):
        SentenceTransformerEmbedder("all-MiniLM-L6-v2", device="cpu", runtime="tensorrt")


def test_int8_runtime_is_close_to_float_and_recorded_under_its_own_name(pair):
    _, onnx_side, cache = pair
    int8 = SentenceTransformerEmbedder("all-MiniLM-L6-v2", device="cpu", runtime="onnx-int8", onnx_cache_dir=str(cache))
    assert int8.runtime == "onnx-int8" and int8.model == "all-MiniLM-L6-v2"
    assert int8.name == "all-MiniLM-L6-v2+int8" != onnx_side.name  # a database keeps one kind of vector
    assert len(list(cache.glob("*-int8.onnx"))) == 1  # quantised once, beside the float export
    got, expected = int8.embed(TEXTS), onnx_side.embed(TEXTS)
    assert got.shape == expected.shape and np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosine = (got * expected).sum(axis=1)
    assert cosine.min() > 0.97 and cosine.mean() > 0.985
    # Still a useful embedder: each text is nearest to its own float vector.
    assert (np.argmax(got @ expected.T, axis=1) == np.arange(len(TEXTS))).all()
    with pytest.raises(EmbedderUnavailable, match="runs on a CPU"):
        SentenceTransformerEmbedder("all-MiniLM-L6-v2", device="cuda", runtime="onnx-int8", onnx_cache_dir=str(cache))


def test_the_direct_tokenizer_gives_what_the_transformers_wrapper_gives(pair):
    from memstream.retrieval.onnx_encoder import _pad as pad

    _, onnx_side, _ = pair
    onnx_side.embed(["load"])
    encoder = onnx_side._onnx
    assert encoder is not None and encoder.fast is not None
    for batch in (TEXTS, TEXTS * 3, ["Où est la gare? 東京 🙂", "hi"]):  # one at a time, the batch call, unicode
        got = pad(encoder._encodings(list(batch)), encoder.tokenizer.pad_token_id)
        wanted = encoder.tokenizer(list(batch), padding=True, truncation=True, max_length=encoder.max_length, return_tensors="np")
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            assert np.array_equal(got[name], wanted[name]), name


def test_keys_of_different_lengths_are_embedded_in_batches_that_pad_little():
    from memstream.retrieval.onnx_encoder import length_batches

    lengths = [18] * 8 + [65] * 8 + [19, 20]  # turn keys beside round keys, as the background indexer sends them
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches = length_batches(order, lengths, batch_size=64)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert [sorted({lengths[i] for i in batch}) for batch in batches] == [[18, 19, 20], [65]]
    assert all(len(batch) <= 4 for batch in length_batches(order, lengths, batch_size=4))
    assert length_batches([], [], 64) == []
