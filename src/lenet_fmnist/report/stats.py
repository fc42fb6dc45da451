"""Small-sample statistics for the report: mean, standard deviation, Student t intervals and
their p-values, Holm's adjustment.

Three seeds per configuration is the norm, so intervals use Student's t, not the normal
approximation (t at 2 degrees of freedom is 4.30, not 1.96). The t distribution's tails and
quantiles are computed here from the regularised incomplete beta function, so the report needs
no scipy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values) if values else math.nan


def std(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1); NaN below two values, where it is undefined."""
    if len(values) < 2:
        return math.nan
    centre = mean(values)
    return math.sqrt(math.fsum((value - centre) ** 2 for value in values) / (len(values) - 1))


def _beta_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return result


def incomplete_beta(a: float, b: float, x: float, y: float | None = None) -> float:
    """Regularised incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1; `y` is 1 - x,
    for a caller that knows it to more digits than `1.0 - x` keeps (x rounded to 1, y tiny)."""
    y = 1.0 - x if y is None else y
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    # The continued fraction converges fast only on one side of the mean a / (a + b); use the
    # symmetry I_x(a, b) = 1 - I_y(b, a) on the other. Either way what is computed is the smaller of
    # the two, so a small result keeps its digits.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, y) / b


def two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with `df` (possibly fractional) degrees of freedom.

    That is I_x(df/2, 1/2) at x = df / (df + t^2), computed as it stands: `2 (1 - CDF)` would
    subtract from 1 and lose every p below about 1e-16 (t=40 at 30 df gives 1.4e-27, not 0). 1 - x
    is passed as t^2 / (df + t^2): for a small t, x rounds to 1 and `1.0 - x` would lose t.
    """
    return incomplete_beta(df / 2.0, 0.5, df / (df + t * t), t * t / (df + t * t))


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` (possibly fractional) degrees of freedom."""
    tail = 0.5 * two_sided_p(t, df)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p, by bisection on the CDF (monotone, so this cannot fail)."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, high * 2.0
    for _ in range(200):
        middle = (low + high) / 2.0
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low < 1e-12 * max(1.0, high):
            break
    return (low + high) / 2.0


@dataclass(frozen=True)
class Interval:
    """A difference of means and its confidence interval (low, high NaN when undefined)."""

    estimate: float
    low: float
    high: float
    df: float
    p: float = math.nan  # two-sided p-value of "no difference" (NaN when undefined)

    @property
    def defined(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))


def welch_interval(sample: Sequence[float], reference: Sequence[float], level: float = 0.95) -> Interval:
    """mean(sample) - mean(reference) with Welch's t interval, which does not assume the two
    groups share a variance (an activation that trains erratically varies more across seeds)."""
    estimate = mean(sample) - mean(reference) if sample and reference else math.nan
    if len(sample) < 2 or len(reference) < 2:
        return Interval(estimate, math.nan, math.nan, math.nan)
    share_a, share_b = std(sample) ** 2 / len(sample), std(reference) ** 2 / len(reference)
    variance = share_a + share_b
    if variance == 0.0:  # identical values in both groups: no spread to speak of
        return Interval(estimate, estimate, estimate, math.inf, float(estimate == 0.0))
    df = variance**2 / (share_a**2 / (len(sample) - 1) + share_b**2 / (len(reference) - 1))
    half = t_quantile(0.5 + level / 2.0, df) * math.sqrt(variance)
    return Interval(estimate, estimate - half, estimate + half, df, two_sided_p(estimate / math.sqrt(variance), df))


def paired_interval(differences: Sequence[float], level: float = 0.95) -> Interval:
    """Mean of paired differences with the one-sample t interval (n - 1 degrees of freedom)."""
    estimate = mean(differences)
    if len(differences) < 2:
        return Interval(estimate, math.nan, math.nan, math.nan)
    spread = std(differences)
    if spread == 0.0:
        return Interval(estimate, estimate, estimate, math.inf, float(estimate == 0.0))
    df = len(differences) - 1
    error = spread / math.sqrt(len(differences))
    half = t_quantile(0.5 + level / 2.0, df) * error
    return Interval(estimate, estimate - half, estimate + half, df, two_sided_p(estimate / error, df))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of p-values tested together (NaN ones left out and kept NaN): the
    k-th smallest of m is multiplied by m - k + 1, never below an earlier one, at most 1. An
    adjusted p below 0.05 keeps the chance of any false "effect" in the family under 5%."""
    order = sorted((index for index, p in enumerate(p_values) if not math.isnan(p)), key=lambda i: p_values[i])
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted
