"""Retrieval metrics against evidence labels: recall_any@k, recall_all@k, NDCG@k (binary relevance)."""

from __future__ import annotations

import math
from typing import Collection, Sequence


def recall_any(retrieved: Sequence[str], gold: Collection[str], k: int) -> float:
    """1.0 if any gold item is in the top k, else 0.0."""
    if not gold:
        raise ValueError("recall needs at least one gold item")
    return 1.0 if any(item in gold for item in retrieved[:k]) else 0.0


def recall_all(retrieved: Sequence[str], gold: Collection[str], k: int) -> float:
    """1.0 if every gold item is in the top k, else 0.0."""
    if not gold:
        raise ValueError("recall needs at least one gold item")
    return 1.0 if set(gold) <= set(retrieved[:k]) else 0.0


def ndcg(retrieved: Sequence[str], gold: Collection[str], k: int) -> float:
    """Binary-relevance NDCG@k; a gold item counts once even if retrieved twice."""
    if not gold:
        raise ValueError("NDCG needs at least one gold item")
    gold = set(gold)
    seen: set[str] = set()
    dcg = 0.0
    for rank, item in enumerate(retrieved[:k]):
        if item in gold and item not in seen:
            seen.add(item)
            dcg += 1.0 / math.log2(rank + 2)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(gold))))
    return dcg / ideal


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])
