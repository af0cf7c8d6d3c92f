"""Cold and warm start times of `memstream chat`, `memstream serve` and `memstream ask` (default local model).

Cold: a fresh data dir (no converted-weights cache, no database, no index cache), as on the first run after
`pip install`. Warm: the same data dir again. Each command runs as a real subprocess:

- chat (in a pseudo-terminal): `usable` = the app is on screen taking input (the loading text shows; what is
  typed then is answered when ready); `ready` = the memory is open and the queued message starts; `answered` = the
  first reply to a message sent at `usable` is done (the model is loaded and has generated).
- serve: `listening` = GET /health answers 200; `answered` = the first /v1/chat/completions (4 tokens) is back.
- ask: `answered` = the process has printed its answer and exited (`memstream ask "Name a colour."`).

    python benchmarks/startup.py                 # writes reports/startup.{json,md}
    python benchmarks/startup.py --runs 2        # warm runs repeated, best kept
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_report  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 600
QUESTION = "Name a colour."


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMSTREAM_")}
    env.update({"MEMSTREAM_HOME": str(home), "MEMSTREAM_AGENT__MAX_REPLY_TOKENS": "8", "MEMSTREAM_AGENT__ENRICH": "false",
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TERM": "xterm-256color", "PYTHONPATH": str(REPO)})
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "memstream.cli", *args]


def time_chat(home: Path) -> dict[str, float]:
    import pexpect

    start = time.perf_counter()
    argv = command("chat", "--user", "bench")
    child = pexpect.spawn(argv[0], argv[1:], env=env_for(home), dimensions=(30, 120), encoding="utf-8",
                          codec_errors="replace", timeout=TIMEOUT_S, cwd=str(REPO))
    try:
        child.expect("Loading")
        usable = time.perf_counter() - start
        child.send(QUESTION)
        child.send("\r")
        child.expect("thinking")  # the queued message starts the moment the memory is open
        ready = time.perf_counter() - start
        child.expect("tok/s")
        answered = time.perf_counter() - start
        child.send("\x11")  # Ctrl+Q
        child.expect(pexpect.EOF, timeout=120)
    finally:
        child.close(force=True)
    return {"usable_s": usable, "ready_s": ready, "answered_s": answered}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_serve(home: Path) -> dict[str, float]:
    port = free_port()
    start = time.perf_counter()
    process = subprocess.Popen(command("serve", "--port", str(port)), env=env_for(home), cwd=str(REPO),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"memstream serve exited with {process.returncode}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.perf_counter() - start > TIMEOUT_S:
                raise TimeoutError("serve did not listen")
            time.sleep(0.05)
        listening = time.perf_counter() - start
        body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 4}
        reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=TIMEOUT_S)
        reply.raise_for_status()
        answered = time.perf_counter() - start
    finally:
        process.terminate()
        process.wait(60)
    return {"listening_s": listening, "answered_s": answered}


def time_ask(home: Path) -> dict[str, float]:
    start = time.perf_counter()
    done = subprocess.run(command("ask", QUESTION, "--user", "bench", "--no-remember"), env=env_for(home), cwd=str(REPO),
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"ask failed: {done.stderr[-500:]}")
    return {"answered_s": time.perf_counter() - start}


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="warm runs per command (the best is reported)")
    parser.add_argument("--commands", default="chat,serve,ask")
    args = parser.parse_args()
    timers = {"chat": time_chat, "serve": time_serve, "ask": time_ask}
    rows, results = [], {}
    for name in args.commands.split(","):
        with tempfile.TemporaryDirectory(prefix=f"startup-{name}-") as tmp:
            home = Path(tmp)
            before = load_average()
            cold = timers[name](home)
            warm_runs = [timers[name](home) for _ in range(args.runs)]
            warm = min(warm_runs, key=lambda r: r["answered_s"])
            results[name] = {"cold": cold, "warm": warm, "warm_runs": warm_runs, "load_average_1m": before}
            for phase, timing in (("cold", cold), ("warm", warm)):
                rows.append({"command": name, "start": phase, **{k: round(v, 2) for k, v in timing.items()}, "load_1m": before})
            print(name, results[name], flush=True)
    headers = ["command", "start", "usable_s", "ready_s", "listening_s", "answered_s", "load_1m"]
    rows = [{h: row.get(h, "") for h in headers} for row in rows]
    notes = ("Seconds from launching the command. chat: usable = on screen taking input, ready = memory open, "
             "answered = first reply done (model loaded); serve: listening = /health 200, answered = first completion; "
             "ask: answered = process done. Cold = fresh data dir (GGUF converted and cached); warm = same dir again. "
             "load_1m is the machine's 1-minute load average when each command started (a shared 2-core machine: "
             "other work ran at the same time). Rerun: python benchmarks/startup.py")
    write_report("startup", {"results": results}, rows, title="Start-up times: memstream chat, serve, ask", notes=notes)


if __name__ == "__main__":
    main()
