"""benchmarks/service_ab.py: two source trees of memstream under the same load. The comparison is only honest if each
server really runs its own tree's code: `python -m memstream.cli` imports the package from its working directory,
ahead of the installed one (a PYTHONPATH does not: the working directory comes first)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from memstream.server.process import ServerProcess


def test_a_server_process_runs_the_source_tree_it_is_started_in(tmp_path):
    tree = tmp_path / "tree"
    (tree / "memstream").mkdir(parents=True)
    (tree / "memstream" / "__init__.py").write_text("")
    marker = tmp_path / "ran"
    (tree / "memstream" / "cli.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text(__file__)\n")
    server = ServerProcess({}, cwd=tree).launch()
    assert server.proc.wait(60) == 0
    assert Path(marker.read_text()).resolve() == (tree / "memstream" / "cli.py").resolve()


def test_base_must_be_a_memstream_source_tree(tmp_path):
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "service_ab.py"
    done = subprocess.run([sys.executable, str(script), "--base", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--base must be a source tree of memstream" in done.stderr
