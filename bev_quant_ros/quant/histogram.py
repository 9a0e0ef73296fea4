"""Streaming activation statistics: |x| histogram, signed extremes and moments per tensor.

Symmetric int8 quantization error depends only on |x|, so one histogram of |x|
serves every calibration method (max, KL, percentile, MSE). Its range is a power
of two that doubles when a larger value arrives; doubling merges bin pairs, which
is exact, so frames stream through without keeping activations in memory and
per-condition histograms merge exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

DEFAULT_BINS = 2048
_MIN_TOP = 2.0 ** -24


def _power_of_two_at_least(value: float) -> float:
    return 2.0 ** math.ceil(math.log2(max(value, _MIN_TOP)))


@dataclass
class TensorStats:
    """Everything calibration and the outlier report need to know about one tensor's values."""

    bins: int = DEFAULT_BINS
    count: int = 0
    minimum: float = math.inf
    maximum: float = -math.inf
    power_sums: np.ndarray = field(default_factory=lambda: np.zeros(4))  # sum x, x^2, x^3, x^4
    top: float = 0.0  # histogram covers |x| in [0, top)
    hist: np.ndarray | None = None

    def update(self, values: np.ndarray) -> None:
        """Add a batch of values (any shape)."""
        flat = np.asarray(values, np.float32).ravel()
        if flat.size == 0:
            return
        low, high = float(flat.min()), float(flat.max())
        self._grow(max(-low, high))
        index = np.minimum((np.abs(flat) * np.float32(self.bins / self.top)).astype(np.int32), self.bins - 1)
        self.hist += np.bincount(index, minlength=self.bins)
        self.count += flat.size
        self.minimum, self.maximum = min(self.minimum, low), max(self.maximum, high)
        wide = flat.astype(np.float64)  # moments in float64: x^4 sums overflow float32 precision
        square = wide * wide
        self.power_sums += (wide.sum(), square.sum(), np.dot(square, wide), np.dot(square, square))

    def _grow(self, absmax: float) -> None:
        if self.hist is None:
            self.top = _power_of_two_at_least(absmax)
            self.hist = np.zeros(self.bins, np.int64)
        while absmax > self.top:
            half = self.hist.reshape(-1, 2).sum(axis=1)
            self.hist = np.concatenate([half, np.zeros(self.bins - half.size, np.int64)])
            self.top *= 2.0

    def merged(self, other: "TensorStats") -> "TensorStats":
        """The statistics of both value sets together (exact)."""
        if other.bins != self.bins:
            raise ValueError(f"cannot merge histograms of {self.bins} and {other.bins} bins")
        result = TensorStats(self.bins)
        for part in (self, other):
            if part.hist is None:
                continue
            result._grow(part.top)
            scaled = part.hist
            top = part.top
            while top < result.top:
                half = scaled.reshape(-1, 2).sum(axis=1)
                scaled = np.concatenate([half, np.zeros(self.bins - half.size, np.int64)])
                top *= 2.0
            result.hist += scaled
            result.count += part.count
            result.minimum = min(result.minimum, part.minimum)
            result.maximum = max(result.maximum, part.maximum)
            result.power_sums = result.power_sums + part.power_sums
        return result

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
        if not self.count or self.hist is None:
            return 0.0
        cdf = np.cumsum(self.hist) / self.count
        target = percent / 100.0
        index = int(np.searchsorted(cdf, target, side="left"))
        index = min(index, self.bins - 1)
        below = cdf[index - 1] if index else 0.0
        inside = self.hist[index] / self.count
        fraction = (target - below) / inside if inside > 0 else 1.0
        width = self.top / self.bins
        return float(min((index + min(max(fraction, 0.0), 1.0)) * width, self.absmax))
