"""The local model in its own process (backends/process.py): the same tokens and counts as in-process,
errors raised where they were, cancellation, a dead child restarted, and the server closing it."""

from __future__ import annotations

import time

import pytest

from memstream.backends.base import BackendError, ContextOverflowError, ModelNotFoundError
from memstream.backends.models import make_backend
from memstream.config import AttentionSettings, BackendSettings, ServerSettings
from memstream.server.queue import ChatScheduler

ASK = [{"role": "user", "content": "Name three colours."}]


def start(**backend) -> object:
    with pytest.MonkeyPatch.context() as patch:  # the child inherits this environment: never a model hub
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        return make_backend(BackendSettings(kind="local", **backend), AttentionSettings(), own_process=True, threads=1)


@pytest.fixture(scope="module")
def in_child():
    backend = start()
    yield backend
    backend.close()


def test_tokens_and_counts_equal_the_model_in_process(in_child, local_backend):
    assert in_child.name == local_backend.name
    assert in_child.context_window == local_backend.context_window
    for value in ("Hello, world!", "naïve café — 東京", ASK):
        assert in_child.count_tokens(value) == local_backend.count_tokens(value)
    assert in_child.complete(ASK, max_tokens=16) == local_backend.complete(ASK, max_tokens=16)  # greedy


def test_a_prompt_past_the_window_fails_at_the_call(in_child):
    with pytest.raises(ContextOverflowError, match="context window"):
        in_child.stream([{"role": "user", "content": "word " * 9000}], max_tokens=8)  # not at the first next()
    with pytest.raises(ValueError):
        in_child.stream([{"role": "robot", "content": "hi"}])  # checked in the parent, nothing sent
    assert in_child.complete(ASK, max_tokens=4)


def test_closing_the_stream_stops_the_generation(in_child):
    expected = in_child.complete(ASK, max_tokens=8)
    pieces = in_child.stream([{"role": "user", "content": "Write a very long story about the sea."}], max_tokens=8000)
    assert next(pieces) and next(pieces)
    pieces.close()
    began = time.monotonic()
    # 8000 tokens would take minutes on one thread: the next request is served once the child sees the cancel.
    assert in_child.complete(ASK, max_tokens=8) == expected
    assert time.monotonic() - began < 60


def test_a_killed_model_process_fails_its_request_and_the_next_one_restarts_it(in_child):
    expected = in_child.complete(ASK, max_tokens=8)
    pieces = in_child.stream([{"role": "user", "content": "Write a very long story about the sea."}], max_tokens=8000)
    next(pieces)
    old = in_child.pid
    in_child._child.proc.kill()
    with pytest.raises(BackendError, match="model process exited"):
        for _ in pieces:
            pass
    assert in_child.complete(ASK, max_tokens=8) == expected
    assert in_child.pid != old


def test_a_model_that_cannot_load_raises_its_error_from_every_call():
    backend = start(device="cuda:7")  # no machine has an eighth GPU for this
    with pytest.raises(Exception) as first:
        backend.count_tokens("x")
    with pytest.raises(Exception) as second:
        backend.stream(ASK)
    # The same error each time, named as a failed load (the server's 502), not the device's bare error (400 or 500).
    assert first.value is second.value and isinstance(first.value, ModelNotFoundError)
    assert "failed to load" in str(first.value) and "cuda" in str(first.value).lower()
    assert backend._child.proc.wait(30) is not None
    backend.close()


def test_the_scheduler_closes_the_model_process():
    backend = start()
    assert backend.complete(ASK, max_tokens=2)
    scheduler = ChatScheduler(backend, ServerSettings())
    scheduler.close()
    assert backend._child.proc.poll() is not None
    with pytest.raises(BackendError, match="closed"):
        backend.complete(ASK)
