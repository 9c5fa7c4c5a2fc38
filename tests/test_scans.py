"""In-kernel scans and treatment until progression, or beyond it until its confirmation (numba
backend), against hand-worked cases.

The test model's sum of diameters is S(t) = S0 (1 - 0.01 t + 1e-4 t^2) (mm; S0 = 50 by default):
it shrinks to a nadir at day 50 and regrows. The drug only accumulates in D, so D at the end
counts the doses given (10 mg each, every 21 days from day 0).
"""

import re

import numpy as np
import pytest

import immunoedit_models as ie
from immunoedit_models.errors import SimulationError
from immunoedit_models.simulate.regimen import Regimen, event_arrays
from immunoedit_models.trials.recist import confirmation_day

SCANS = np.array([0.0, 42.0, 84.0, 126.0, 168.0, 210.0])
TIMES = np.array([0.0, 100.0, 250.0])


@pytest.fixture(scope="module")
def model():
    return ie.compile_model("tests/specs/scan_model.yaml")


def sld(s0: float, t: np.ndarray) -> np.ndarray:
    """The model's sum of diameters in closed form (mm)."""
    return s0 * (1 - 0.01 * t + 1e-4 * t**2)


def regimen(duration: float = 0.0, until_progression: bool = True) -> Regimen:
    return Regimen.repeated("drug", 10.0, every=21, count=20, duration=duration,
                            until_progression=until_progression)


def run(model, s0: float, duration: float = 0.0, until_progression: bool = True):
    P = np.array([[s0, 0.01 * s0, 2e-4 * s0]])      # S0, shrink, curvature (order of the spec)
    assert model.parameters == ("S0", "shrink", "curvature")
    ev = event_arrays([regimen(duration, until_progression)], model.kernels.dose_factors(P),
                      list(model.kernels.drug_names), {"drug": 1})
    return model.kernels.solve_scanned(
        model.kernels.initial(P), P, 0.0, TIMES, ev.time, ev.state, ev.kind, ev.value, 1e-9, 1e-12,
        scan_t=SCANS, burden_index=0, pd_rel=0.2, pd_abs=5.0, ev_guard=ev.guard)


def test_scans_read_the_burden_at_scan_times(model):
    Y, status, _, _, scans, pd_time = run(model, 50.0)
    assert status[0] == 0
    np.testing.assert_allclose(scans[0], sld(50.0, SCANS), rtol=1e-8)


def test_progression_uses_the_nadir_and_stops_the_doses(model):
    # nadir 37.82 mm at day 42; day 84: 43.28 < 1.2 x 37.82 = 45.38 (no PD); day 126: 66.38 (PD)
    Y, status, _, _, _, pd_time = run(model, 50.0)
    assert pd_time[0] == 126.0
    assert Y[0, -1, 1] == pytest.approx(60.0)       # doses on days 0, 21, ..., 105; not from 126


def test_progression_needs_five_millimetres(model):
    # S0 = 5: day 126 is 75 % above the nadir (3.78 mm) but only 2.86 mm; day 168 is +6.93 mm
    Y, _, _, _, _, pd_time = run(model, 5.0)
    assert pd_time[0] == 168.0
    assert Y[0, -1, 1] == pytest.approx(80.0)       # days 0 .. 147


def test_unguarded_doses_continue_after_progression(model):
    Y, _, _, _, _, pd_time = run(model, 50.0, until_progression=False)
    assert pd_time[0] == 126.0
    assert Y[0, -1, 1] == pytest.approx(120.0)      # days 0 .. 231 within 250 days


def test_infusions_stop_whole(model):
    # each dose infused over 2 days: D rises by 10 mg per dose, none started from day 126 on
    Y, _, _, _, _, pd_time = run(model, 50.0, duration=2.0)
    assert pd_time[0] == 126.0
    assert Y[0, -1, 1] == pytest.approx(60.0, rel=1e-9)


def beyond(model, s0: float, cpd_abs: float, pd_doses: float = 0.0):
    """Doses of 1 mg every 21 days given beyond progression, plus (pd_doses > 0) doses of
    pd_doses mg on the same days given until progression; returns (Y, scans, pd_time)."""
    reg = Regimen.repeated("drug", 1.0, every=21, count=20, until_confirmed_progression=True)
    if pd_doses:
        reg = reg + Regimen.repeated("drug", pd_doses, every=21, count=20, until_progression=True)
    P = np.array([[s0, 0.01 * s0, 2e-4 * s0]])
    ev = event_arrays([reg], model.kernels.dose_factors(P), ["drug"], {"drug": 1})
    Y, _, _, _, scans, pd_time = model.kernels.solve_scanned(
        model.kernels.initial(P), P, 0.0, TIMES, ev.time, ev.state, ev.kind, ev.value, 1e-9, 1e-12,
        scan_t=SCANS, burden_index=0, ev_guard=ev.guard, cpd_abs=cpd_abs, ev_guard_c=ev.guard_confirmed)
    return Y, scans, pd_time


@pytest.mark.parametrize("s0, cpd_abs, confirmed", [
    (50.0, 5.0, 168.0),       # PD day 126 at 66.38 mm; day 168 107.12 mm, +40.7 >= 5: confirmed
    (50.0, 50.0, 210.0),      # +40.7 < 50 at day 168; day 210 165.5 mm, +99.1: confirmed
    (5.0, 5.0, 210.0),        # PD day 168 at 10.71 mm; day 210 16.55 mm, +5.84 mm
    (50.0, 1e3, np.inf),      # never confirmed within the scans
])
def test_treatment_beyond_progression_stops_at_confirmation(model, s0, cpd_abs, confirmed):
    Y, scans, pd_time = beyond(model, s0, cpd_abs)
    given = np.arange(0.0, 250.0, 21.0)                      # doses within the 250 days
    assert Y[0, -1, 1] == pytest.approx(float(np.sum(given < confirmed)))
    assert confirmation_day(scans, SCANS, pd_time, cpd_abs)[0] == confirmed     # the readout agrees


def test_progression_and_confirmation_guards_act_together(model):
    # 10 mg doses stop at PD (day 126: days 0..105, 60 mg), 1 mg doses at its confirmation
    # (day 168: days 0..147, 8 mg)
    Y, _, pd_time = beyond(model, 50.0, 5.0, pd_doses=10.0)
    assert pd_time[0] == 126.0
    assert Y[0, -1, 1] == pytest.approx(68.0)


def test_a_dose_has_one_stopping_rule():
    with pytest.raises(SimulationError, match="set until_progression or until_confirmed_progression, not both"):
        ie.Dose("drug", 0.0, 1.0, until_progression=True, until_confirmed_progression=True)


def test_batch_and_single_trajectory_agree(model):
    s0 = np.array([50.0, 5.0, 20.0])
    P = np.column_stack([s0, 0.01 * s0, 2e-4 * s0])
    ev = event_arrays([regimen()] * 3, model.kernels.dose_factors(P), ["drug"], {"drug": 1})
    got = model.kernels.solve_scanned(model.kernels.initial(P), P, 0.0, TIMES, ev.time, ev.state,
                                      ev.kind, ev.value, 1e-9, 1e-12, scan_t=SCANS,
                                      burden_index=0, ev_guard=ev.guard)
    np.testing.assert_array_equal(got[5], [126.0, 168.0, 126.0])
    np.testing.assert_allclose(got[4], sld(s0[:, None], SCANS[None]), rtol=1e-8)


def test_each_trajectory_scans_on_its_own_days(model):
    # visit days around the schedule: S0 = 50 progresses at its 4th visit, day 126 + 9.5 (74.1 mm
    # >= 1.2 x the nadir 37.5 mm of day 47; day 81: 42.3 mm); S0 = 20 on the schedule: day 126,
    # as in the shared-scan test above
    s0 = np.array([50.0, 20.0])
    P = np.column_stack([s0, 0.01 * s0, 2e-4 * s0])
    rows = SCANS + np.array([[0.0, 5.0, -3.0, 9.5, 1.0, -7.0], [0.0] * 6])
    ev = event_arrays([regimen()] * 2, model.kernels.dose_factors(P), ["drug"], {"drug": 1})
    args = (model.kernels.initial(P), P, 0.0, TIMES, ev.time, ev.state, ev.kind, ev.value, 1e-9, 1e-12)
    Y, status, _, _, scans, pd_time = model.kernels.solve_scanned(*args, scan_t=rows, burden_index=0,
                                                                   ev_guard=ev.guard)
    np.testing.assert_allclose(scans, sld(s0[:, None], rows), rtol=1e-8)
    np.testing.assert_array_equal(pd_time, [135.5, 126.0])
    assert Y[0, -1, 1] == pytest.approx(70.0)       # doses on days 0, 21, ..., 126; not from 147
    for b in range(2):                              # the same as one trajectory with its own days
        one = model.kernels.solve_scanned(*(a[b:b + 1] for a in args[:2]), 0.0, TIMES,
                                          *(a[b:b + 1] for a in args[4:8]), 1e-9, 1e-12,
                                          scan_t=rows[b], burden_index=0, ev_guard=ev.guard[b:b + 1])
        np.testing.assert_array_equal(one[4][0], scans[b])
        assert one[5][0] == pd_time[b]


def test_scan_rows_must_match_the_batch(model):
    with pytest.raises(SimulationError, match=re.escape(
            "scan_t must be (n_scan,) or (1, n_scan), one row per trajectory; got shape (2, 6)")):
        model.kernels.solve_scanned(np.zeros((1, 2)), np.ones((1, 3)), 0.0, TIMES, [np.inf], [0],
                                    [0], [0.0], 1e-6, 1e-9, scan_t=np.vstack([SCANS, SCANS]))
    with pytest.raises(SimulationError, match=re.escape("scan_t must be finite, sorted, with scan_t >= t0")):
        model.kernels.solve_scanned(np.zeros((2, 2)), np.ones((2, 3)), 0.0, TIMES, [np.inf], [0],
                                    [0], [0.0], 1e-6, 1e-9, scan_t=np.vstack([SCANS, SCANS[::-1]]))


def test_bad_burden_index_is_reported(model):
    with pytest.raises(SimulationError, match="burden_index 3 is not an output index"):
        model.kernels.solve_scanned(np.zeros((1, 2)), np.ones((1, 3)), 0.0, TIMES, [np.inf], [0],
                                    [0], [0.0], 1e-6, 1e-9, scan_t=SCANS, burden_index=3)
