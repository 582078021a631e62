"""The verdict interval keeps its coverage at the seed counts studies use.

A seeded simulation of the study's design: per pretraining seed s and test example x the
paired difference is δ + u_s + g_x + h_sx, u the seed's effect (pretraining and fine-tuning),
g the example's effect common to every seed (the test set is one sample of examples), h the
example noise of that seed's models. The interval the verdicts use (`fdapt_core.stats`, its
test part from resampling examples as a report does) must cover δ in 0.86–0.94 of
repetitions at nominal 0.90, with 3 and with 10 seeds, where seed noise dominates and where
test noise does. The percentile bootstrap over seeds and examples that it replaced covered
about 0.80 at 3 seeds with seed noise dominant: it cannot reach past the seeds it saw.
"""
from __future__ import annotations

import numpy as np
import pytest

from fdapt_core.stats import paired_difference, replicate_variances, shared_test_variance

N = 400  # test examples
REPS = 1000  # repetitions of the whole study: the coverage's standard error is ~0.01
RESAMPLES = 200  # resamples of test examples within one report
DELTA = 0.7  # the true difference (points)
# standard deviations in points: the seed effect, the shared and the particular example noise
SCENARIOS = {"seed noise dominant": (3.0, 8.0, 8.0),  # seed ± 3.0 vs test ± 0.4 per seed
             "test noise dominant": (0.2, 25.0, 15.0)}  # seed ± 0.2 vs test ± 1.5


def verdict_interval(diffs: np.ndarray, rng: np.random.Generator):
    """The report's 90 % interval from `diffs[s, x]`: per-seed means, and the shared test
    noise from the same example resamples for every seed."""
    idx = rng.integers(0, diffs.shape[1], (RESAMPLES, diffs.shape[1]))
    replicates = diffs[:, idx].mean(axis=2).T  # [resample, seed]
    shared = shared_test_variance(*replicate_variances(replicates))
    return paired_difference(diffs.mean(axis=1), shared).interval(0.90)


def coverage(interval, seeds: int, sds: tuple[float, float, float], seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    su, sg, sh = sds
    hit = 0
    for _ in range(REPS):
        diffs = DELTA + rng.normal(0, su, (seeds, 1)) + rng.normal(0, sg, (1, N)) \
            + rng.normal(0, sh, (seeds, N))
        ci = interval(diffs, rng)
        hit += ci.low <= DELTA <= ci.high
    return hit / REPS


@pytest.mark.parametrize("seeds", [3, 10])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_the_90_percent_interval_covers_in_086_to_094(seeds, scenario):
    c = coverage(verdict_interval, seeds, SCENARIOS[scenario])
    assert 0.86 <= c <= 0.94, f"{scenario}, {seeds} seeds: coverage {c:.3f}"


def test_the_shared_test_part_is_what_seeds_cannot_show():
    """With no seed effect and no particular example noise, every seed reads the same
    difference: the spread between seeds is zero and the whole interval is the test set's."""
    rng = np.random.default_rng(1)
    diffs = np.tile(rng.normal(0.5, 10.0, N), (3, 1))
    d = paired_difference(diffs.mean(axis=1), shared_test_variance(
        *replicate_variances(diffs[:, rng.integers(0, N, (500, N))].mean(axis=2).T)))
    assert d.seed_var == 0
    assert d.shared_var == pytest.approx(diffs[0].var() / N, rel=0.15)  # the bootstrap's
    assert d.df == float("inf")
