"""Uncertainty for the study's comparisons: t-intervals over pretraining seeds, paired bootstrap
intervals over test examples, and equivalence verdicts (two one-sided tests).

Two sources of noise separate two models' downstream scores: which test examples happened to
be drawn (the test set is a sample), and which pretraining seed trained the model. The paired
bootstrap resamples test examples, the same indices for both models, so their difference is
read on the same examples (Koehn 2004; Berg-Kirkpatrick et al. 2012). The t-interval over
pretraining seeds reads the seed-to-seed spread of paired per-seed differences. The verdict
interval takes both: each bootstrap replicate draws the seeds (paired, with replacement) and
then the examples.

An equivalence claim "A is within m of B" is tested with two one-sided tests at level α
(Schuirmann 1987): equivalent when the (1 − 2α) interval of the difference lies inside
(−m, m); not equivalent when it lies wholly outside; else inconclusive at this sample size.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
from scipy import stats as scipy_stats


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    level: float  # e.g. 0.95


def t_interval(values: Sequence[float], level: float = 0.95) -> Optional[Interval]:
    """Student-t interval of the mean (None for fewer than two values)."""
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    half = scipy_stats.t.ppf(0.5 + level / 2, len(values) - 1) * statistics.stdev(values) \
        / math.sqrt(len(values))
    return Interval(mean, mean - half, mean + half, level)


def percentile_interval(estimate: float, replicates: np.ndarray, level: float) -> Interval:
    low, high = np.quantile(replicates, [0.5 - level / 2, 0.5 + level / 2])
    return Interval(float(estimate), float(low), float(high), level)


def hierarchical_bootstrap(score: Callable[[int, str, np.ndarray], float], seeds: Sequence[int],
                           n_examples: int, a: str, b: str, *, resamples: int = 2000,
                           seed: int = 0, levels: Sequence[float] = (0.95,)) -> list[Interval]:
    """Intervals (one per level, from the same replicates) of the mean over pretraining seeds
    of score(s, a, idx) − score(s, b, idx): each replicate draws the seeds (paired, with
    replacement), then the test examples (with one seed: the paired bootstrap)."""
    everything = np.arange(n_examples)
    seeds = list(seeds)
    rng = np.random.default_rng(seed)
    reps = np.empty(resamples)
    for r in range(resamples):
        drawn = [seeds[i] for i in rng.integers(0, len(seeds), len(seeds))]
        idx = rng.integers(0, n_examples, n_examples)
        reps[r] = statistics.fmean(score(s, a, idx) - score(s, b, idx) for s in drawn)
    estimate = statistics.fmean(score(s, a, everything) - score(s, b, everything)
                                for s in seeds)
    return [percentile_interval(estimate, reps, level) for level in levels]


EQUIVALENT, NOT_EQUIVALENT, INCONCLUSIVE = "equivalent", "not equivalent", "inconclusive"


def equivalence(interval: Interval, margin: float) -> str:
    """The TOST verdict of a difference's interval (level 1 − 2α) against ±margin."""
    if -margin < interval.low and interval.high < margin:
        return EQUIVALENT
    if interval.low >= margin or interval.high <= -margin:
        return NOT_EQUIVALENT
    return INCONCLUSIVE
