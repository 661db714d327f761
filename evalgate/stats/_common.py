"""Shared plumbing of the statistics package: JSON-safe records, seeds, resampling units."""

from __future__ import annotations

import dataclasses
import enum
import math
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd


def json_safe(value: Any) -> Any:
    """Builtins only: dataclasses -> dict, tuples -> list, numpy -> Python, NaN/inf -> None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: json_safe(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return json_safe(value.value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Record:
    """Mixin for the frozen result dataclasses: ``to_dict()`` gives JSON-safe builtins."""

    def to_dict(self) -> dict[str, Any]:
        out = json_safe(self)
        assert isinstance(out, dict)
        return out


def derive_seed(seed: int, *keys: str) -> int:
    """A child seed that depends only on ``seed`` and the names in ``keys``.

    Keyed by name (not by position) so adding a config to a suite does not change the
    random draws, and so the numbers, of the configs already there.
    """
    words = [int(seed)] + [zlib.crc32(k.encode("utf-8")) for k in keys]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0])


def finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclasses.dataclass(frozen=True, slots=True)
class Units:
    """Resampling units of N observations: each case alone, or its group (cluster).

    Attributes:
        index: unit number of each observation, in ``range(count)``.
        count: number of units G.
        clustered: True when some unit holds more than one observation.
    """

    index: np.ndarray
    count: int

    @property
    def clustered(self) -> bool:
        return self.count < len(self.index)

    def totals(self, values: np.ndarray) -> np.ndarray:
        """Per-unit sums of ``values`` (shape (N,) or (N, K)) -> (G,) or (G, K)."""
        values = np.asarray(values, dtype=float)
        if not self.clustered and np.array_equal(self.index, np.arange(self.count)):
            return values
        out = np.zeros((self.count, *values.shape[1:]))
        np.add.at(out, self.index, values)
        return out


def make_units(groups: Sequence[Any] | np.ndarray | None, n: int) -> Units:
    """Units from optional group labels; a missing label (None/NaN) is a unit of its own."""
    if groups is None:
        return Units(np.arange(n), n)
    labels = pd.Series(np.asarray(groups, dtype=object))
    if len(labels) != n:
        raise ValueError(f"groups has {len(labels)} labels for {n} observations")
    missing = labels.isna().to_numpy()
    codes, uniques = pd.factorize(labels, use_na_sentinel=True)
    codes = codes.astype(np.int64)
    codes[missing] = len(uniques) + np.arange(int(missing.sum()))
    return Units(codes, len(uniques) + int(missing.sum()))
