"""Honest tuning: leave-one-conversation-out (LOCO) over the dev conversations.

A tuned value is chosen by `fit` on the questions of every conversation but one and scored by `score` on the
one left out; each question is thus scored with a value picked without its conversation. The in-sample figure
(the value picked on all conversations, scored on all) is reported beside it, so a report shows how much of a
gain is fitted to the dev set.

Both callables see plain lists of items (questions with whatever precomputed signals the tuned step reads), so
the protocol serves any tuned value (attribution, fusion weights, thresholds, prompt variants) as long as its
effect can be scored per item. Items are pooled: the held-out metric is computed over the union of the five
held-out predictions, not averaged per fold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Hashable, Sequence, TypeVar

Item = TypeVar("Item")
Param = TypeVar("Param", bound=Hashable)


@dataclass
class LocoResult(Generic[Param]):
    chosen_all: Param
    """The value fitted on every conversation (what would ship)."""
    chosen_per_fold: dict[str, Param]
    """Conversation left out -> the value fitted without it."""
    in_sample: dict[str, Any]
    held_out: dict[str, Any]
    per_fold: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Conversation left out -> its own held-out metrics."""

    def to_dict(self, describe: Callable[[Param], Any] = repr) -> dict[str, Any]:
        return {
            "chosen_all": describe(self.chosen_all),
            "chosen_per_fold": {g: describe(p) for g, p in self.chosen_per_fold.items()},
            "in_sample": self.in_sample,
            "held_out": self.held_out,
            "per_fold": self.per_fold,
        }


def leave_one_group_out(
    groups: dict[str, Sequence[Item]],
    fit: Callable[[list[Item]], Param],
    score: Callable[[list[tuple[Item, Param]]], dict[str, Any]],
) -> LocoResult[Param]:
    """Run LOCO. `fit(items) -> value`; `score([(item, value used for it), ...]) -> metrics`."""
    if len(groups) < 2:
        raise ValueError(f"leave-one-out needs at least two conversations, got {len(groups)}")
    everything = [item for items in groups.values() for item in items]
    chosen_all = fit(everything)
    chosen: dict[str, Param] = {}
    held_out_pairs: list[tuple[Item, Param]] = []
    per_fold: dict[str, dict[str, Any]] = {}
    for name, items in groups.items():
        rest = [item for other, others in groups.items() if other != name for item in others]
        value = fit(rest)
        chosen[name] = value
        pairs = [(item, value) for item in items]
        held_out_pairs += pairs
        per_fold[name] = score(pairs)
    return LocoResult(
        chosen_all=chosen_all,
        chosen_per_fold=chosen,
        in_sample=score([(item, chosen_all) for item in everything]),
        held_out=score(held_out_pairs),
        per_fold=per_fold,
    )


def pick_best(candidates: Sequence[Param], objective: Callable[[Param], tuple]) -> Param:
    """The candidate with the largest objective tuple; ties go to the earliest candidate (list them in order of preference)."""
    if not candidates:
        raise ValueError("no candidates to choose from")
    best = candidates[0]
    best_key = objective(best)
    for candidate in candidates[1:]:
        key = objective(candidate)
        if key > best_key:
            best, best_key = candidate, key
    return best
