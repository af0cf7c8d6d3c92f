"""Run `memstream serve` as a child process (scale-out tests, load benchmarks).

`ServerProcess(env=..., port=None).start()` starts `python -m memstream.cli serve` on
127.0.0.1 (a free port unless given), waits until `/ready` answers 200, and `stop()` sends
SIGTERM (uvicorn's graceful shutdown), killing only if it does not exit in time. Settings go
through the environment (`MEMSTREAM_*`), as for any deployment.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(db_url: str, home: Path, api_keys: dict[str, str] | None = None, index_refresh_s: float = 1.0,
               backend: str = "scripted", **extra: str) -> dict[str, str]:
    """Environment for a child server: the database, data dir, keys and backend kind; offline model hubs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMSTREAM_")}
    env.update({
        "MEMSTREAM_DB_URL": db_url,
        "MEMSTREAM_HOME": str(home),
        "MEMSTREAM_BACKEND__KIND": backend,
        "MEMSTREAM_SERVER__INDEX_REFRESH_S": str(index_refresh_s),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    })
    if api_keys:
        env["MEMSTREAM_SERVER__API_KEYS"] = json.dumps(api_keys)
    env.update(extra)
    return env


class ServerProcess:
    def __init__(self, env: dict[str, str], port: int | None = None, cwd: Path | None = None):
        self.env = env
        self.port = port or free_port()
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self.final_output = ""
        self.log = tempfile.NamedTemporaryFile(prefix="memstream-serve-", suffix=".log", delete=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> "ServerProcess":
        """Start the process without waiting (start several, then `wait_ready` each)."""
        command = [sys.executable, "-m", "memstream.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(command, env=self.env, cwd=self.cwd, stdout=self.log, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout_s: float = 180.0) -> "ServerProcess":
        assert self.proc is not None, "launch() first"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"memstream serve exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"memstream serve on port {self.port} was not ready within {timeout_s}s:\n{self.output()[-3000:]}")

    def start(self, timeout_s: float = 180.0) -> "ServerProcess":
        return self.launch().wait_ready(timeout_s)

    def output(self) -> str:
        if self.log.closed:
            return self.final_output
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then wait for the graceful shutdown; SIGKILL only past timeout_s. Returns the exit code
        (-15 after a graceful stop too: uvicorn re-raises the signal once shut down); the log stays in `final_output`."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.final_output = self.output()
        self.log.close()
        os.unlink(self.log.name)
        return self.proc.returncode

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
