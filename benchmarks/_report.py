"""Write a benchmark's results as reports/NAME.json and a markdown table reports/NAME.md."""

from __future__ import annotations

import json
import platform
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path

REPORTS = Path(__file__).resolve().parents[1] / "reports"


def machine() -> dict:
    import os

    return {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}


def write_report(name: str, results: dict, rows: list[dict] | None = None, title: str | None = None, notes: str = "") -> Path:
    REPORTS.mkdir(exist_ok=True)
    payload = {"benchmark": name, "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(), **results}
    (REPORTS / f"{name}.json").write_text(scrub_paths(json.dumps(payload, indent=2, default=str)) + "\n")
    lines = [f"# {title or name}", "", f"Machine: {payload['machine']}", ""]
    if notes:
        lines += [notes, ""]
    if rows:
        headers = list(rows[0])
        lines.append("| " + " | ".join(headers) + " |")
        lines.append("|" + "---|" * len(headers))
        for row in rows:
            lines.append("| " + " | ".join(_fmt(row.get(h)) for h in headers) + " |")
    (REPORTS / f"{name}.md").write_text(scrub_paths("\n".join(lines)) + "\n")
    return REPORTS / f"{name}.json"


def scrub_paths(text: str) -> str:
    """Reports are published: temp-dir paths (fault injection, scratch databases) become <tmp>."""
    return re.sub(re.escape(tempfile.gettempdir()) + r"/[^\s\"'|,)]*", "<tmp>", text)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)
