"""Synthetic reconstructed-IPD files for the small trial-fit tests."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def write_censored_ipd(path: Path, rng: np.random.Generator, median_months: float, n: int,
                       censor_months: tuple[float, float]) -> None:
    """Write `n` patients' (time_months, event) to `path`: exponential event times with the given
    median, censored by uniform times in `censor_months` (event times drawn first, then censoring)."""
    t = rng.exponential(median_months / math.log(2), n)
    c = rng.uniform(*censor_months, n)
    path.write_text("time_months,event\n" + "".join(
        f"{float(min(a, b))!r},{int(a <= b)}\n" for a, b in zip(t, c)))


def product_limit(time, event, at) -> np.ndarray:
    """Kaplan-Meier survival at each of `at`, by hand (the test reference for lifelines' KM):
    S(a) = prod over distinct event times u <= a of (1 - deaths at u / patients with time >= u)."""
    time, event = np.asarray(time, float), np.asarray(event, int)
    out = []
    for a in np.asarray(at, float):
        s = 1.0
        for u in np.unique(time[(event == 1) & (time <= a)]):
            s *= 1.0 - ((time == u) & (event == 1)).sum() / (time >= u).sum()
        out.append(s)
    return np.array(out)
