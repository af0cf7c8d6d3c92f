"""PNG plots for a run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)


def plot_per_category(results: dict[str, Any], metric: str, path: Path) -> None:
    """Grouped bars: one group per category, one bar per system."""
    systems = results["systems"]
    categories = sorted({cat for s in systems.values() for cat in s["per_category"]})
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(categories) + 2), 4))
    width = 0.8 / max(1, len(systems))
    for i, (name, summary) in enumerate(systems.items()):
        values = [summary["per_category"].get(cat, {}).get(metric) or 0.0 for cat in categories]
        ax.bar([c + i * width for c in range(len(categories))], values, width, label=name)
    ax.set_xticks([c + width * (len(systems) - 1) / 2 for c in range(len(categories))], categories, rotation=20, ha="right")
    ax.set_ylabel(metric)
    ax.set_title(f"{results['benchmark']}: {metric} per category")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_accuracy_vs_tokens(results: dict[str, Any], metric: str, path: Path) -> None:
    """One point per system: mean prompt tokens against the headline score."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, summary in results["systems"].items():
        x = summary.get("prompt_tokens") or 0.0
        y = summary.get(metric) or 0.0
        ax.scatter([x], [y], s=60)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("prompt tokens per question (mean)")
    ax.set_ylabel(metric)
    ax.set_title(f"{results['benchmark']}: {metric} vs prompt tokens")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
