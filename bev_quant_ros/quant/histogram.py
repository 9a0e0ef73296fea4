"""Streaming activation statistics: |x| histogram, signed extremes and moments per tensor.

Symmetric int8 quantization error depends only on |x|, so one histogram of |x|
serves every calibration method (max, KL, percentile, MSE). Its range is a power
of two that doubles when a larger value arrives; doubling merges bin pairs, which
is exact, so frames stream through without keeping activations in memory and
per-condition histograms merge exactly. A value equal to the range's top (the power of
two itself) is counted apart: after a doubling it belongs to the bin starting at the old
top, not to the pair merged from the old last bin, so streaming and merging agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

DEFAULT_BINS = 2048
_MIN_TOP = 2.0 ** -24


def _power_of_two_at_least(value: float) -> float:
    return 2.0 ** math.ceil(math.log2(max(value, _MIN_TOP)))


def _doubled(below_top: np.ndarray, at_top: int) -> tuple[np.ndarray, int]:
    """The bins of a range twice as wide: pairs merge; values at the old top start the upper half."""
    half = below_top.reshape(-1, 2).sum(axis=1)
    upper = np.zeros(below_top.size - half.size, np.int64)
    upper[0] = at_top
    return np.concatenate([half, upper]), 0


@dataclass
class TensorStats:
    """Everything calibration and the outlier report need to know about one tensor's values."""

    bins: int = DEFAULT_BINS
    count: int = 0
    minimum: float = math.inf
    maximum: float = -math.inf
    power_sums: np.ndarray = field(default_factory=lambda: np.zeros(4))  # sum x, x^2, x^3, x^4
    top: float = 0.0  # the bins cover |x| in [0, top); |x| == top is counted in at_top
    below_top: np.ndarray | None = None
    at_top: int = 0

    def update(self, values: np.ndarray) -> None:
        """Add a batch of values (any shape)."""
        flat = np.asarray(values, np.float32).ravel()
        if flat.size == 0:
            return
        low, high = float(flat.min()), float(flat.max())
        self._grow(max(-low, high))
        index = (np.abs(flat) * np.float32(self.bins / self.top)).astype(np.int32)  # a power-of-two scale: exact
        self.at_top += int(np.count_nonzero(index == self.bins))
        self.below_top += np.bincount(index[index < self.bins], minlength=self.bins)
        self.count += flat.size
        self.minimum, self.maximum = min(self.minimum, low), max(self.maximum, high)
        wide = flat.astype(np.float64)  # moments in float64: x^4 sums overflow float32 precision
        square = wide * wide
        self.power_sums += (wide.sum(), square.sum(), np.dot(square, wide), np.dot(square, square))

    def _grow(self, absmax: float) -> None:
        if self.below_top is None:
            self.top = _power_of_two_at_least(absmax)
            self.below_top = np.zeros(self.bins, np.int64)
        while absmax > self.top:
            self.below_top, self.at_top = _doubled(self.below_top, self.at_top)
            self.top *= 2.0

    def merged(self, other: "TensorStats") -> "TensorStats":
        """The statistics of both value sets together (exact)."""
        if other.bins != self.bins:
            raise ValueError(f"cannot merge histograms of {self.bins} and {other.bins} bins")
        result = TensorStats(self.bins)
        for part in (self, other):
            if part.below_top is None:
                continue
            result._grow(part.top)
            below, at_top, top = part.below_top, part.at_top, part.top
            while top < result.top:
                below, at_top = _doubled(below, at_top)
                top *= 2.0
            result.below_top += below
            result.at_top += at_top
            result.count += part.count
            result.minimum = min(result.minimum, part.minimum)
            result.maximum = max(result.maximum, part.maximum)
            result.power_sums = result.power_sums + part.power_sums
        return result

    @property
    def hist(self) -> np.ndarray | None:
        """Counts per bin, values at the top in the last bin (what the calibration methods read)."""
        if self.below_top is None:
            return None
        counts = self.below_top.copy()
        counts[-1] += self.at_top
        return counts

    @property
    def absmax(self) -> float:
        return max(abs(self.minimum), abs(self.maximum)) if self.count else 0.0

    @property
    def bin_edges(self) -> np.ndarray:
        return np.linspace(0.0, self.top, self.bins + 1)

    @property
    def mean(self) -> float:
        return float(self.power_sums[0] / self.count) if self.count else math.nan

    @property
    def std(self) -> float:
        if not self.count:
            return math.nan
        return float(math.sqrt(max(self.power_sums[1] / self.count - self.mean ** 2, 0.0)))

    @property
    def kurtosis(self) -> float:
        """Pearson kurtosis E[(x-mu)^4]/sigma^4 (3 for a Gaussian; large = heavy tails/outliers)."""
        if not self.count:
            return math.nan
        s1, s2, s3, s4 = self.power_sums / self.count
        mu = s1
        m2 = s2 - mu * mu
        m4 = s4 - 4 * mu * s3 + 6 * mu * mu * s2 - 3 * mu ** 4
        return float(m4 / (m2 * m2)) if m2 > 1e-30 else math.nan

    def abs_percentile(self, percent: float) -> float:
        """The |x| value below which `percent` % of the values lie (linear within a bin)."""
        hist = self.hist
        if not self.count or hist is None:
            return 0.0
        cdf = np.cumsum(hist) / self.count
        target = percent / 100.0
        index = int(np.searchsorted(cdf, target, side="left"))
        index = min(index, self.bins - 1)
        below = cdf[index - 1] if index else 0.0
        inside = hist[index] / self.count
        fraction = (target - below) / inside if inside > 0 else 1.0
        width = self.top / self.bins
        return float(min((index + min(max(fraction, 0.0), 1.0)) * width, self.absmax))
