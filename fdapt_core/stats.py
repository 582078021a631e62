"""Uncertainty for the study's comparisons: intervals of paired differences that keep their
coverage at the few pretraining seeds studies afford, equivalence verdicts, Holm's correction,
and the variance components a power plan is made from.

Three sources of noise separate two methods' downstream scores: the pretraining seed (which
model DAPT produced), the fine-tuning seed (which classifier was fitted on it), and the test
examples (the test set is a sample). A difference is read paired: per pretraining seed, both
methods fine-tuned with the same fine-tuning seeds and scored on the same test examples; its
per-seed value is the mean over fine-tuning seeds. The fine-tuning seeds must be fresh for
each pretraining seed: shared by all of them, their effect is common to every per-seed value
and only `crossed_difference` (two-way random effects) sees it.

`paired_difference` is a t-interval over those per-seed differences, widened by the part of
the test-set noise that every seed shares (all seeds are scored on the same examples, so the
spread between seeds cannot show it), with Satterthwaite's degrees of freedom. The shared part
comes from resampling test examples (`shared_test_variance`): the variance of the seed-mean
difference less what the seeds' own example noise already puts into their spread. With seed
noise dominant it is Student's t over the seeds (df = seeds − 1); with test noise dominant it
tends to the paired bootstrap over examples. A seeded simulation through the report's own
code (tests/test_coverage.py), with pretraining, fine-tuning, interaction and test noise,
shows the 90 % interval covering in 0.86–0.94 of repetitions at 3 and at 10 seeds with fresh
fine-tuning seeds; with fine-tuning seeds shared by every pretraining seed the same interval
covered 0.68 at 10 seeds, the crossed interval 0.86.

An equivalence claim "A is within m of B" is tested with two one-sided tests at level α
(Schuirmann 1987): equivalent when the (1 − 2α) interval lies inside (−m, m). Not equivalent
when the difference is shown beyond ±m (one-sided p below α, after Holm's correction across
the rows of a claim); else inconclusive at this sample size.
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


@dataclass(frozen=True)
class PairedDifference:
    """The mean over pretraining seeds of a paired difference, with its variance in two parts:
    `seed_var`, the spread between seeds over their count (s² / S: pretraining and fine-tuning
    noise, and each seed's own example noise), and `shared_var`, the test-set noise common to
    every seed (and any other part they share, e.g. a reference fine-tuned only once)."""

    estimate: float
    seed_var: float
    shared_var: float
    seeds: int
    per_seed: tuple[float, ...] = ()
    seed_df: Optional[float] = None  # degrees of freedom of `seed_var` (None: seeds − 1)

    @property
    def se(self) -> float:
        return math.sqrt(self.seed_var + self.shared_var)

    @property
    def df(self) -> float:
        """Satterthwaite's degrees of freedom: those of the seed part (seeds − 1, or a crossed
        design's own) where it dominates, many where the shared (test) part does, whose
        estimate rests on thousands of examples."""
        if self.seeds < 2:
            return math.inf
        if self.seed_var <= 0:
            return math.inf
        seed_df = self.seed_df if self.seed_df is not None else self.seeds - 1
        return (self.seed_var + self.shared_var) ** 2 / (self.seed_var ** 2 / seed_df)

    def _t(self, q: float) -> float:
        return float(scipy_stats.t.ppf(q, self.df)) if math.isfinite(self.df) \
            else float(scipy_stats.norm.ppf(q))

    def interval(self, level: float) -> Optional[Interval]:
        """Two-sided interval; None with fewer than two seeds (no spread to read)."""
        if self.seeds < 2:
            return None
        half = self._t(0.5 + level / 2) * self.se
        return Interval(self.estimate, self.estimate - half, self.estimate + half, level)

    def p_above(self, value: float = 0.0) -> Optional[float]:
        """One-sided p-value of "the difference is at most `value`": small when the estimate
        exceeds it by more than its noise (None: < 2 seeds or no interval)."""
        if self.seeds < 2:
            return None
        if self.se == 0:
            return 0.0 if self.estimate > value else 1.0
        z = (self.estimate - value) / self.se
        return float(scipy_stats.t.sf(z, self.df)) if math.isfinite(self.df) \
            else float(scipy_stats.norm.sf(z))

    def p_beyond(self, margin: float) -> Optional[float]:
        """One-sided p-value of "the difference lies beyond ±margin" against "within": small
        when the estimate sits outside the margin by more than its noise (None: < 2 seeds)."""
        if self.seeds < 2:
            return None
        if self.se == 0:
            return 0.0 if abs(self.estimate) > margin else 1.0
        z = (abs(self.estimate) - margin) / self.se
        return float(scipy_stats.t.sf(z, self.df)) if math.isfinite(self.df) \
            else float(scipy_stats.norm.sf(z))


def shared_test_variance(var_of_mean: float, var_each: Sequence[float]) -> float:
    """The test-set noise every seed shares, from resampling test examples (the same resample
    for every seed): `var_of_mean`, the variance of the seed-mean difference, and `var_each`,
    each seed's own. With example effects g common to all seeds and h particular to one,
    var_of_mean = (g + h/S)/N and mean(var_each) = (g + h)/N, so g/N follows (clipped at 0:
    the resampling's own noise can push it below)."""
    seeds = len(var_each)
    if seeds < 2:
        return max(0.0, float(var_of_mean))
    return max(0.0, (seeds * var_of_mean - statistics.fmean(var_each)) / (seeds - 1))


def paired_difference(per_seed: Sequence[float], shared_var: float) -> PairedDifference:
    """Per-seed paired differences (each the mean over the fine-tuning seeds) and the shared
    variance from `shared_test_variance` (plus any other shared part)."""
    values = [float(v) for v in per_seed]
    seeds = len(values)
    spread = statistics.variance(values) / seeds if seeds > 1 else 0.0
    return PairedDifference(statistics.fmean(values), spread, float(shared_var), seeds,
                            tuple(values))


def crossed_difference(diffs: np.ndarray, shared_var: float) -> PairedDifference:
    """The mean of `diffs[s, f]` when fine-tuning seed f is the same for every pretraining
    seed s (crossed): a seed f then moves every pretraining seed's difference alike, an effect
    the spread between pretraining seeds cannot show. Two-way random effects without
    replication, d = δ + a_s + b_f + e_sf: the mean's variance σa²/S + σb²/F + σe²/(SF) from
    the mean squares (each component clipped at 0), with Satterthwaite's degrees of freedom,
    which are few when F is: with 2 fine-tuning seeds the b part rests on one."""
    d = np.asarray(diffs, dtype=float)
    n_s, n_f = d.shape
    if n_s < 2 or n_f < 2:
        raise ValueError("a crossed design needs 2 pretraining and 2 fine-tuning seeds at least")
    rows, cols, grand = d.mean(axis=1), d.mean(axis=0), float(d.mean())
    ms_a = n_f * float(rows.var(ddof=1))
    ms_b = n_s * float(cols.var(ddof=1))
    resid = d - rows[:, None] - cols[None, :] + grand
    df_ab = (n_s - 1) * (n_f - 1)
    ms_ab = float((resid ** 2).sum()) / df_ab
    # var = Σ c_i · MS_i / (S·F): MS_A + MS_B − MS_AB with both components positive; a
    # component clipped at 0 drops its mean square and the −MS_AB it carried
    coef = {"a": float(ms_a > ms_ab), "b": float(ms_b > ms_ab)}
    coef["ab"] = 1.0 - coef["a"] - coef["b"]
    terms = {"a": (ms_a, n_s - 1), "b": (ms_b, n_f - 1), "ab": (ms_ab, df_ab)}
    var = sum(coef[k] * ms for k, (ms, _) in terms.items()) / (n_s * n_f)
    denom = sum((coef[k] * ms / (n_s * n_f)) ** 2 / df for k, (ms, df) in terms.items())
    seed_df = var ** 2 / denom if denom > 0 else math.inf
    return PairedDifference(grand, var, float(shared_var), n_s, tuple(float(v) for v in rows),
                            seed_df)


def replicate_variances(replicates: np.ndarray) -> tuple[float, list[float]]:
    """(variance of the seed mean, each seed's variance) over resamples of test examples:
    `replicates[b, s]` is seed s's difference on resample b."""
    reps = np.asarray(replicates, dtype=float)
    return float(reps.mean(axis=1).var(ddof=1)), [float(v) for v in reps.var(axis=0, ddof=1)]


def holm(pvalues: Sequence[Optional[float]], alpha: float) -> list[bool]:
    """Holm's step-down: which hypotheses are rejected at family-wise level `alpha` (None: not
    tested, never rejected, and not counted)."""
    tested = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    rejected = [False] * len(pvalues)
    for rank, (p, i) in enumerate(tested):
        if p > alpha / (len(tested) - rank):
            break
        rejected[i] = True
    return rejected


@dataclass(frozen=True)
class Components:
    """Variance components of a paired difference, in points²: between pretraining seeds,
    between fine-tuning seeds of one model, and the test set's shared part (for the test set
    it was read on)."""

    pretraining: float
    finetuning: float
    test: float


def components(diffs: np.ndarray, shared_var: float, crossed: bool = False) -> Components:
    """From `diffs[s, f]`, the difference at pretraining seed s and fine-tuning seed f (the
    same fine-tuning seeds for both methods): one-way ANOVA, the within-seed spread for
    fine-tuning and what the between-seed spread holds beyond it for pretraining. `crossed`:
    fine-tuning seed f was the same for every s, so its effect b_f moved every row alike and
    left the row means' spread; two-way ANOVA then gives pretraining (MS_A − MS_AB) / F and
    fine-tuning σb² + σe², what one fresh fine-tuning seed would add to a row."""
    d = np.asarray(diffs, dtype=float)
    n_seeds, n_ft = d.shape
    if crossed and n_seeds > 1 and n_ft > 1:
        rows, cols = d.mean(axis=1), d.mean(axis=0)
        ms_a, ms_b = n_ft * float(rows.var(ddof=1)), n_seeds * float(cols.var(ddof=1))
        resid = d - rows[:, None] - cols[None, :] + d.mean()
        ms_ab = float((resid ** 2).sum()) / ((n_seeds - 1) * (n_ft - 1))
        return Components(max(0.0, (ms_a - ms_ab) / n_ft),
                          max(0.0, (ms_b - ms_ab) / n_seeds) + ms_ab, float(shared_var))
    within = float(d.var(axis=1, ddof=1).mean()) if n_ft > 1 else 0.0
    between = float(d.mean(axis=1).var(ddof=1)) if n_seeds > 1 else 0.0
    return Components(max(0.0, between - within / n_ft), within, float(shared_var))


def half_width(c: Components, seeds: int, finetune_seeds: int, level: float = 0.90) -> float:
    """The interval's half-width that `seeds` × `finetune_seeds` would give, these components
    taken as known (the design's expected half-width)."""
    seed_var = (c.pretraining + c.finetuning / finetune_seeds) / seeds
    return PairedDifference(0.0, seed_var, c.test, seeds).interval(level).high


def seeds_needed(c: Components, finetune_seeds: int, room: float, level: float = 0.90,
                 most: int = 200) -> Optional[int]:
    """The fewest pretraining seeds (2 or more) whose half-width fits in `room` (the margin,
    less any difference one expects), or None if even `most` do not (the shared test noise
    alone may not fit: a larger test set is then what deciding takes)."""
    if room <= 0:
        return None
    for seeds in range(2, most + 1):
        if half_width(c, seeds, finetune_seeds, level) <= room:
            return seeds
    return None


EQUIVALENT, NOT_EQUIVALENT, INCONCLUSIVE = "equivalent", "not equivalent", "inconclusive"


def equivalent(interval: Interval, margin: float) -> bool:
    """Two one-sided tests: the (1 − 2α) interval of the difference lies inside ±margin."""
    return -margin < interval.low and interval.high < margin


POWER_SIMULATIONS = 4000  # simulated studies per seed count: power within ±0.013 (2 SE)


def decision_power(c: Components, seeds: int, finetune_seeds: int, delta: float,
                   margin: float, hope: str, alpha: float = 0.05, sims: int = POWER_SIMULATIONS,
                   seed: int = 0) -> float:
    """The probability that a study of `seeds` pretraining seeds (each fine-tuned
    `finetune_seeds` times) reads the row as hoped, if the true difference is `delta` and the
    variance components are `c`: `hope` "equivalent" (the 1 − 2α interval inside ±margin,
    what `equivalent` asks) or "beyond" (shown beyond ±margin one-sided at `alpha`: pass a
    claim's α over its rows for Holm's first step, a lower bound on its power).

    Simulated through the interval the verdicts take (`PairedDifference`): per-seed
    differences with the pretraining and fine-tuning variance, their sample variance (so the
    t's degrees of freedom and a small study's noisy spread count), and the test set's shared
    offset, whose variance is taken as known (it rests on thousands of examples). A
    half-width that fits the margin on average is only about an even chance of a decision."""
    rng = np.random.default_rng(seed)
    per_seed_var = c.pretraining + c.finetuning / finetune_seeds
    mean = delta + rng.normal(0, math.sqrt(per_seed_var / seeds), sims) \
        + rng.normal(0, math.sqrt(c.test), sims)
    s2 = per_seed_var * rng.chisquare(seeds - 1, sims) / (seeds - 1) if seeds > 1 \
        else np.zeros(sims)
    seed_var = s2 / seeds
    total = seed_var + c.test
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(seed_var > 0, total ** 2 / (seed_var ** 2 / max(seeds - 1, 1)), np.inf)
    se = np.sqrt(total)
    if hope == "equivalent":
        q = np.where(np.isfinite(df), scipy_stats.t.ppf(1 - alpha, np.minimum(df, 1e9)),
                     scipy_stats.norm.ppf(1 - alpha))
        ok = (mean - q * se > -margin) & (mean + q * se < margin)
    elif hope == "beyond":
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(se > 0, (np.abs(mean) - margin) / se, np.inf)
        p = np.where(np.isfinite(df), scipy_stats.t.sf(z, np.minimum(df, 1e9)),
                     scipy_stats.norm.sf(z))
        ok = p < alpha
    else:
        raise ValueError(f"hope {hope!r}: equivalent or beyond")
    return float(ok.mean()) if seeds > 1 else 0.0


def seeds_for_power(power: Callable[[int], float], target: float = 0.80,
                    most: int = 200) -> Optional[int]:
    """The fewest pretraining seeds (2 or more, up to `most`) at which `power(seeds)` reaches
    `target`, or None; by bisection, power growing with seeds (`decision_power` draws the
    same random numbers at every count, so its estimate grows smoothly too)."""
    if power(most) < target:
        return None
    low, high = 1, most  # power(low) < target (one seed decides nothing), power(high) ≥ it
    while high - low > 1:
        mid = (low + high) // 2
        if power(mid) >= target:
            high = mid
        else:
            low = mid
    return high
