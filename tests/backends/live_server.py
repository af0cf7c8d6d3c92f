"""Session fixtures shared by the backend and server tests: the default local model, loaded once,
and a memstream server on 127.0.0.1 (a free port) serving it with an API key."""

from __future__ import annotations

import pytest

API_KEY = "test-key-123"


@pytest.fixture(scope="session")
def local_backend():
    from memstream.backends.models import make_backend
    from memstream.config import AttentionSettings, BackendSettings

    with pytest.MonkeyPatch.context() as patch:  # loading must never reach a model hub
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        backend = make_backend(BackendSettings(kind="local"), AttentionSettings())
    backend.generator.manual_seed(0)
    return backend


@pytest.fixture(scope="session")
def live_server(local_backend):
    from memstream.config import ServerSettings, Settings
    from memstream.server.app import ServerThread, create_app

    settings = Settings(server=ServerSettings(api_keys={API_KEY: "tests"}, max_body_bytes=8192, max_tokens_limit=64))
    with ServerThread(create_app(settings, local_backend)) as server:
        yield server
