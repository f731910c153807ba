"""Paired statistics for every comparison the project reports (model vs model, switch on vs
off, champion vs challenger, as served vs popularity).

Two rankers are compared on the **same cases** (users, or events grouped by user): the
per-case difference is what varies, not each mean, so the interval of the difference is
far narrower than two separate intervals would suggest (and honest where they overlap).
Resampling is by cluster (a user), because a user's several events are not independent.

Pure numpy; the seed is an argument, so a reported interval is reproducible.

- ``mean_interval``: mean and percentile-bootstrap interval of one metric.
- ``paired_difference``: mean of (a - b), its bootstrap interval, and the two-sided p-value
  of a paired test (a sign-flip permutation test on the cluster sums: exact under the
  null of exchangeable a and b, no normality assumed).
- ``paired_against``: every ranker against one reference on the same cases.
A difference is called a gain or a loss only when its interval excludes 0 (``verdict``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 42


@dataclass(frozen=True)
class Interval:
    """A mean and its (1 - alpha) bootstrap interval over ``n`` cases in ``clusters`` groups."""

    mean: float
    low: float
    high: float
    n: int
    clusters: int

    def to_dict(self) -> dict[str, float | int]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def text(self, digits: int = 4) -> str:
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@dataclass(frozen=True)
class Difference(Interval):
    """mean(a - b) with its interval, and the paired test's two-sided p-value."""

    p_value: float = 1.0

    @property
    def verdict(self) -> str:
        """'better' / 'worse' only when the interval excludes 0; 'no difference shown' else."""
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return "no difference shown"

    def text(self, digits: int = 4) -> str:
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def _clusters(values: np.ndarray, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(sum, count) per cluster; every case its own cluster when ``groups`` is None."""
    if groups is None:
        return values.astype(np.float64), np.ones(len(values))
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    sums = np.bincount(inverse, weights=values.astype(np.float64))
    counts = np.bincount(inverse).astype(np.float64)
    return sums, counts


def _bootstrap_means(sums: np.ndarray, counts: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Case-weighted means of ``resamples`` cluster resamples: [resamples]."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sums), size=(resamples, len(sums)))  # [R, C]
    return sums[picks].sum(axis=1) / counts[picks].sum(axis=1)


def mean_interval(
    values: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    alpha: float = 0.05,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Interval:
    """The mean over cases and its percentile bootstrap interval, resampling clusters."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no cases to average")
    if groups is not None and len(groups) != len(values):
        raise ValueError(f"{len(groups)} groups for {len(values)} values")
    sums, counts = _clusters(values, groups)
    means = _bootstrap_means(sums, counts, resamples, seed)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return Interval(float(values.mean()), float(low), float(high), len(values), len(sums))


def paired_difference(
    a: np.ndarray,
    b: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    alpha: float = 0.05,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Difference:
    """mean(a - b) over the same cases, its cluster-bootstrap interval and paired p-value.

    The p-value is a sign-flip permutation test: under the null that a and b are
    exchangeable within each cluster, each cluster's summed difference is as likely
    negated, so the observed |mean| is compared with ``resamples`` random sign flips.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in shape: {a.shape} vs {b.shape}")
    diff = a - b
    interval = mean_interval(diff, groups, alpha=alpha, resamples=resamples, seed=seed)
    sums, counts = _clusters(diff, groups)
    rng = np.random.default_rng(seed + 1)
    signs = rng.choice([-1.0, 1.0], size=(resamples, len(sums)))  # [R, C]
    flipped = np.abs((signs * sums).sum(axis=1)) / counts.sum()
    observed = abs(diff.mean())
    # +1 in both: the observed assignment is one of the permutations (never p = 0)
    p_value = (1 + int((flipped >= observed - 1e-15).sum())) / (resamples + 1)
    return Difference(
        interval.mean, interval.low, interval.high, interval.n, interval.clusters, p_value
    )


def paired_against(
    per_case: dict[str, np.ndarray],
    reference: str,
    groups: np.ndarray | None = None,
    *,
    alpha: float = 0.05,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> dict[str, Difference]:
    """(other - reference) for every other ranker of ``per_case``, paired on the same cases."""
    if reference not in per_case:
        raise KeyError(f"reference {reference!r} is not among {sorted(per_case)}")
    return {
        name: paired_difference(
            values, per_case[reference], groups, alpha=alpha, resamples=resamples, seed=seed
        )
        for name, values in per_case.items()
        if name != reference
    }
