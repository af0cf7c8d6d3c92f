"""benchmarks/locomo_full_context.py's paired interval: whether a gap between two systems on the same questions is more
than chance. A gap that every question shows is outside chance; the same answers resampled in pairs are not."""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from locomo_full_context import paired_interval  # noqa: E402


def test_a_gap_every_question_shows_is_outside_chance():
    low, high = paired_interval([(0.5, 0.25)] * 30, resamples=2000)
    assert low == high == 0.25


def test_noise_around_the_same_mean_holds_zero_and_one_big_win_does_not_decide():
    rng = random.Random(1)
    noisy = [(x, x + rng.choice((-0.2, 0.2))) for x in (rng.random() for _ in range(60))]
    low, high = paired_interval(noisy, resamples=2000)
    assert low < 0 < high
    one_win = [(0.0, 0.0)] * 59 + [(1.0, 0.0)]  # one question decides a 0.017 mean gap: not a difference
    low, high = paired_interval(one_win, resamples=2000)
    assert low == 0.0 and high > 0


def test_too_few_pairs_give_no_interval():
    assert paired_interval([(0.1, 0.0)]) is None
    assert paired_interval([]) is None
