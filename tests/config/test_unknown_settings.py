"""Unknown MEMSTREAM_* variables and memstream.toml keys are ignored with a warning naming the closest real setting."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest

from tests.conftest import REPO_ROOT

from memstream.config import ConfigWarning, load_settings, setting_names, unknown_env_names


def config_warnings(**env: str) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name, value in env.items():
            os.environ[name] = value
        try:
            load_settings()
        finally:
            for name in env:
                del os.environ[name]
    return [str(w.message) for w in caught if issubclass(w.category, ConfigWarning)]


@pytest.mark.parametrize(
    "variable, closest",
    [
        ("MEMSTREAM_DATA_DIR", "MEMSTREAM_HOME"),
        ("MEMSTREAM_BACKEND_MODEL", "MEMSTREAM_BACKEND__MODEL"),
        ("MEMSTREAM_AGENT__TOPK", "MEMSTREAM_AGENT__TOP_K"),
        ("MEMSTREAM_DATABASE_URL", "MEMSTREAM_DB_URL"),
        ("MEMSTREAM_AGENT__MODEL", "MEMSTREAM_BACKEND__MODEL"),
    ],
)
def test_an_unknown_variable_names_the_closest_real_one(variable, closest):
    messages = config_warnings(**{variable: "x"})
    assert len(messages) == 1, messages
    assert variable in messages[0] and f"did you mean {closest}?" in messages[0]


def test_a_name_like_nothing_says_so():
    (message,) = config_warnings(MEMSTREAM_QQQQQQQQQQ="1")
    assert "MEMSTREAM_QQQQQQQQQQ" in message and "no setting has a similar name" in message


def test_real_variables_give_no_warning_and_still_apply(isolated_home):
    env = {
        "MEMSTREAM_AGENT__TOP_K": "7",
        "MEMSTREAM_BACKENDS__fast__model": "other",  # a dict setting's own keys
        "MEMSTREAM_SERVER__API_KEYS": '{"k1": "team"}',
        "MEMSTREAM_RETRIEVAL": '{"rrf_k": 5}',  # a whole section as JSON
        "MEMSTREAM_DB_URL": "sqlite:///x.db",
    }
    assert config_warnings(**env) == []
    assert list(unknown_env_names({**env, "MEMSTREAM_HOME": str(isolated_home), "MEMSTREAM_CONFIG": "x"})) == []
    os.environ.update(env)
    try:
        settings = load_settings()
    finally:
        for name in env:
            del os.environ[name]
    assert settings.agent.top_k == 7 and settings.backends["fast"].model == "other" and settings.retrieval.rrf_k == 5


def test_unknown_file_keys_warn_and_the_rest_of_the_file_applies(tmp_path):
    (tmp_path / "memstream.toml").write_text(
        'datadir = "/elsewhere"\n[backend]\nmodle = "typo"\ntimeout_s = 9\n[agent]\ntop_k = 3\n', encoding="utf-8"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        settings = load_settings()
    messages = sorted(str(w.message) for w in caught if issubclass(w.category, ConfigWarning))
    assert len(messages) == 2, messages
    assert "key backend.modle" in messages[0] and "did you mean backend.model?" in messages[0]
    assert "key datadir" in messages[1] and "did you mean home?" in messages[1]
    assert settings.backend.timeout_s == 9 and settings.agent.top_k == 3
    assert settings.backend.model == "smollm2-135m-instruct" and str(settings.home) != "/elsewhere"


def test_every_documented_setting_is_known():
    names = setting_names()
    assert {"home", "db_url", "backend.model", "backend.weights_cache", "server.api_keys"} <= set(names)


def test_the_command_line_prints_the_warning_as_one_plain_line(isolated_home):
    env = {**os.environ, "MEMSTREAM_DATA_DIR": "/somewhere", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-m", "memstream.cli", "models", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Warning: environment variable MEMSTREAM_DATA_DIR is not a memstream setting and is ignored; did you mean MEMSTREAM_HOME?" in done.stderr
    assert "config.py" not in done.stderr  # no developer-style file:line prefix
