"""Lognormal frailty on the post-progression hazard: h_i(t) = Z_i h(t), Z_i = exp(sigma u_i).

References: the marginal survival of an exponential hazard mixed over a lognormal frailty,
S(t) = E[exp(-h t Z)], by scipy quad over the normal density; the model without a frailty.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from immunoedit_models.trials.endpoints import DAYS_PER_MONTH, Censoring, SurvivalParameters, death_day, patient_outcomes

SCANS = np.r_[0.0, np.arange(1, 9) * 42.0]
PD_MONTHS = 84.0 / DAYS_PER_MONTH                      # every patient: PD seen at the day-84 visit


def progressing_patients(n: int, survival: SurvivalParameters, seed: int = 0):
    """n patients whose SLD regrows from day 30 (PD at the day-84 scan), followed 47 months."""
    sld = 60.0 * np.exp(np.where(SCANS < 30.0, -0.01 * SCANS, -0.3 + 0.01 * (SCANS - 30.0)))
    return patient_outcomes(np.broadcast_to(sld, (n, SCANS.size)), SCANS, np.zeros((n, 2)),
                            np.array([0.0, 1461.0]), np.random.default_rng(seed), Censoring(0.0, 47.0),
                            survival=survival, dims=("patient",))


def mixture_survival(t_months: float, hazard: float, sigma: float) -> float:
    """E[exp(-hazard t Z)] over Z = exp(sigma u), u ~ N(0, 1)."""
    value, _ = integrate.quad(lambda u: stats.norm.pdf(u) * np.exp(-hazard * t_months * np.exp(sigma * u)),
                              -12.0, 12.0, limit=200)
    return value


@pytest.mark.parametrize("sigma", [0.0, 1.2, 2.5])
def test_frailty_gives_the_lognormal_mixture_survival(sigma):
    n, hazard = 100_000, 0.1
    ds = progressing_patients(n, SurvivalParameters(np.inf, 0.0, hazard, post_progression_frailty_sd=sigma))
    after = ds.os_months.values - PD_MONTHS
    for t in (3.0, 10.0, 25.0, 40.0):
        expected = mixture_survival(t, hazard, sigma)
        got = np.mean(after > t)                           # no censoring before 47 - 2.8 months
        assert abs(got - expected) < 4 * np.sqrt(expected * (1 - expected) / n), (t, got, expected)
    assert np.all(ds.pfs_months.values == PD_MONTHS)     # the frailty acts after progression only


def test_frailty_draws_leave_the_generator_and_the_other_draws_unchanged():
    pd_day = np.full(1000, 84.0)
    rngs = [np.random.default_rng(5) for _ in range(3)]
    plain = death_day(np.full(1000, np.inf), pd_day, SurvivalParameters(np.inf, 0.01, 0.1), rngs[0])
    zero = death_day(np.full(1000, np.inf), pd_day, SurvivalParameters(np.inf, 0.01, 0.1, 0.0, 1e10, 0.0), rngs[1])
    frail = death_day(np.full(1000, np.inf), pd_day,
                      SurvivalParameters(np.inf, 0.01, 0.1, post_progression_frailty_sd=1.0), rngs[2])
    np.testing.assert_array_equal(plain[0], zero[0])
    assert not np.array_equal(plain[0], frail[0])
    background = plain[1] == 2
    np.testing.assert_array_equal(plain[0][background & (frail[1] == 2)], frail[0][background & (frail[1] == 2)])
    assert rngs[0].random() == rngs[1].random() == rngs[2].random()     # what follows is the same trial


def test_frailty_setting_is_checked():
    with pytest.raises(ValueError, match="post_progression_frailty_sd must be >= 0"):
        SurvivalParameters(post_progression_frailty_sd=-0.1)
    assert not SurvivalParameters().frail and SurvivalParameters(post_progression_frailty_sd=0.5).frail
