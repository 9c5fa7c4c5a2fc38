"""Sensitivity analysis against closed forms and against SALib run directly on the same batch.

References:
- Ishigami function f = sin p1 + 7 sin^2 p2 + 0.1 p3^4 sin p1, p ~ U(-pi, pi)^3: analytic Sobol
  indices S1 = (0.3139, 0.4424, 0), ST = (0.5576, 0.4424, 0.2437), S13 = 0.2437 (Ishigami & Homma
  1990; Saltelli et al., Global Sensitivity Analysis: The Primer, 2008; also SALib's test suite).
- Morris on the Ishigami function, 4-level grid {-pi, -pi/3, pi/3, pi}, step 2/3 of the range (4pi/3):
  every p2 step changes 7 sin^2 p2 by 7 * 3/4, so |EE2| = 5.25 / (2/3) = 7.875 exactly; |EE1| =
  1.5 (sqrt(3)/2)(1 + 0.1 p3^4) with p3^4 in {pi^4, pi^4/81} equally likely, E = 7.704;
  |EE3| = 1.5 * 0.1 |sin p1| (pi^4 - pi^4/81) with |sin p1| in {0, sqrt(3)/2}, E = 6.249 (derived
  here by hand from the design's levels).
- linear_sensitivity.yaml: x = x0 exp(-k t) gives d ln x / d ln k = -k t, d ln x / d ln x0 = 1;
  z(1) = c1 + 3 c2 + 0.1 c3 gives exact elementary effects w_i (high_i - low_i), sigma = 0.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from SALib.analyze import sobol as salib_sobol  # noqa: E402
from SALib.sample import sobol as salib_sample  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import immunoedit_models as ie  # noqa: E402
from immunoedit_models import sensitivity as sa  # noqa: E402
from immunoedit_models.cli import app  # noqa: E402
from immunoedit_models.errors import SimulationError  # noqa: E402

ISHIGAMI_S1 = np.array([0.3139, 0.4424, 0.0])
ISHIGAMI_ST = np.array([0.5576, 0.4424, 0.2437])
ISHIGAMI_S13 = 0.2437
PI4 = math.pi ** 4
MORRIS_MU_STAR = np.array([1.5 * math.sqrt(3) / 2 * (1 + 0.1 * (PI4 + PI4 / 81) / 2), 7.875,
                           0.5 * 1.5 * 0.1 * math.sqrt(3) / 2 * (PI4 - PI4 / 81)])


def ishigami(P: np.ndarray) -> np.ndarray:
    return np.sin(P[:, 0]) + 7 * np.sin(P[:, 1]) ** 2 + 0.1 * P[:, 2] ** 4 * np.sin(P[:, 0])


@pytest.fixture(scope="module")
def ishigami_model(specs_dir):
    return ie.compile_model(specs_dir / "ishigami.yaml", backend="numba")


@pytest.fixture(scope="module")
def linear_model(specs_dir):
    return ie.compile_model(specs_dir / "linear_sensitivity.yaml", backend="numba")


@pytest.fixture(scope="module")
def ishigami_sobol(ishigami_model):
    """n = 8192 base samples with second order: 65,536 runs; 95 % CIs of ~0.01-0.03."""
    return sa.sobol(ishigami_model, "x@1", ["p1", "p2", "p3"], n=8192, second_order=True, seed=0)


def test_sobol_ishigami_matches_analytic_indices_within_bootstrap_ci(ishigami_sobol):
    ds = ishigami_sobol.sel(output="x@1")
    for key, exact in (("S1", ISHIGAMI_S1), ("ST", ISHIGAMI_ST)):
        est, conf = ds[key].values, ds[f"{key}_conf"].values
        assert np.all(conf < 0.04), conf  # the CI is narrow enough for the check to mean something
        # 2 x the 95 % half-width (~4 standard errors); the result is deterministic for seed 0
        np.testing.assert_array_less(np.abs(est - exact), 2 * conf)
    s13 = ds["S2"].sel(param="p1", param2="p3")
    assert abs(float(s13) - ISHIGAMI_S13) < 2 * float(ds["S2_conf"].sel(param="p1", param2="p3"))
    assert ishigami_sobol.attrs["n_runs"] == 8192 * 8 and ishigami_sobol.attrs["n_failed_runs"] == 0
    assert ishigami_sobol.attrs["seed"] == 0 and ishigami_sobol.attrs["spec_hash"]


def test_sobol_equals_salib_run_directly_on_the_same_batch(ishigami_model):
    """The design is SALib's, the batch is plain simulate_batch, the estimator is SALib's."""
    ds = sa.sobol(ishigami_model, "x@1", ["p1", "p2", "p3"], n=1024, seed=3)
    problem = {"num_vars": 3, "names": ["p1", "p2", "p3"], "bounds": [[-math.pi, math.pi]] * 3}
    X = salib_sample.sample(problem, 1024, calc_second_order=False, seed=3)
    np.testing.assert_array_equal(ds["X"].values, X)
    batch = ie.simulate_batch(ishigami_model, params=pd.DataFrame(X, columns=problem["names"]), times=[0.0, 1.0])
    Y = batch["x"].sel(time=1.0).values
    np.testing.assert_allclose(Y, ishigami(X), rtol=1e-9, atol=1e-9)  # x(1) = f(p) exactly
    np.testing.assert_allclose(ds["Y"].sel(output="x@1").values, Y, rtol=0, atol=0)
    ref = salib_sobol.analyze(problem, Y, calc_second_order=False, seed=12345)
    np.testing.assert_allclose(ds["S1"].sel(output="x@1").values, ref["S1"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ds["ST"].sel(output="x@1").values, ref["ST"], rtol=1e-12, atol=1e-12)
    # bootstrap CIs depend on the resampling seed, not on the estimate: same scale as SALib's
    np.testing.assert_allclose(ds["S1_conf"].sel(output="x@1").values, ref["S1_conf"], rtol=0.5)


def test_same_seed_same_result_other_seed_other_design(ishigami_model):
    a, b, c = (sa.sobol(ishigami_model, "x@1", n=64, seed=s) for s in (7, 7, 8))
    for key in ("S1", "S1_conf", "ST", "ST_conf", "X"):
        np.testing.assert_array_equal(a[key].values, b[key].values)
    assert not np.array_equal(a["X"].values, c["X"].values)


def test_morris_ishigami_against_hand_derived_elementary_effects(ishigami_model):
    ds = sa.morris(ishigami_model, "x@1", ["p1", "p2", "p3"], n=50, seed=0).sel(output="x@1")
    mu_star, conf = ds["mu_star"].values, ds["mu_star_conf"].values
    assert mu_star[1] == pytest.approx(7.875, rel=1e-9) and conf[1] < 1e-9  # exact for every trajectory
    for j in (0, 2):  # sample means of two-valued effects: within 2 x the 95 % bootstrap half-width
        assert abs(mu_star[j] - MORRIS_MU_STAR[j]) < 2 * conf[j]
    assert mu_star[2] < min(mu_star[0], mu_star[1])  # p3 ranks last, as its expected mu* (6.25 < 7.7)


def test_morris_additive_model_is_exact(linear_model):
    ds = sa.morris(linear_model, ["z@1"], ["c1", "c2", "c3", "k"], n=10, seed=1).sel(output="z@1")
    np.testing.assert_allclose(ds["mu_star"].values, [1 * 2, 3 * 1, 0.1 * 4, 0.0], atol=1e-9)
    np.testing.assert_allclose(ds["mu"].values, [2, 3, 0.4, 0.0], atol=1e-9)
    np.testing.assert_allclose(ds["sigma"].values, 0.0, atol=1e-9)


def test_sobol_time_resolved_additive_model(linear_model):
    """z(t) = (c1 + 3 c2 + 0.1 c3) t: S1_i = w_i^2 var_i / sum, at every t > 0; NaN at t = 0."""
    ds = sa.sobol(linear_model, ["z"], ["c1", "c2", "c3"], n=512, times=[0.0, 5.0, 10.0])
    var = np.array([1.0, 9.0, 0.01]) * np.array([2.0, 1.0, 4.0]) ** 2 / 12
    exact = var / var.sum()
    s1 = ds["S1"].sel(output="z").transpose("time", "param").values
    assert np.all(np.isnan(s1[0]))  # z(0) = 0 for every run: no variance to apportion
    for t in (1, 2):
        np.testing.assert_array_less(np.abs(s1[t] - exact), 2 * ds["S1_conf"].sel(output="z").values[t] + 1e-9)
    assert ds["S1"].dims == ("output", "time", "param")


@pytest.mark.parametrize("backend, derivative", [("numba", "forward"), ("numba", "fd"), ("jax", "autodiff")])
def test_local_linear_decay_against_analytic(specs_dir, backend, derivative):
    model = ie.compile_model(specs_dir / "linear_sensitivity.yaml", backend=backend)
    t = np.array([0.0, 5.0, 10.0, 20.0])
    # tsit5 for JAX: the model is not stiff and its reverse-mode graph compiles ~2x faster than kvaerno5's
    method = "tsit5" if backend == "jax" else None
    ds = sa.local_sensitivity(model, ["x"], ["k", "x0"], times=t, rtol=1e-10, atol=1e-12, method=method,
                              derivative="auto" if derivative != "fd" else "fd")
    assert ds.attrs["derivative"] == derivative
    k = dict(zip(model.parameters, model.symbolic.param_values))["k"]
    np.testing.assert_allclose(ds["S"].sel(output="x", param="k").values, -k * t, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ds["S"].sel(output="x", param="x0").values, 1.0, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ds["value"].sel(output="x").values, 10 * np.exp(-k * t), rtol=1e-8)


@pytest.mark.parametrize("derivative", ["forward", "fd"])
def test_local_through_parameter_dependent_doses(specs_dir, derivative):
    """pk_one_compartment, 100 mg boluses on days 0, 7, ..., 28 into C via 1/V: each dose adds
    T_i = (100/V) exp(-(CL/V)(t - t_i)), so d ln C / d ln V = sum T_i (-1 + ke (t - t_i)) / C and
    d ln C / d ln CL = -sum T_i ke (t - t_i) / C with ke = CL/V."""
    model = ie.compile_model(specs_dir / "pk_one_compartment.yaml", backend="numba")
    t = np.array([0.0, 1.0, 10.0, 30.0, 40.0])  # integration starts at the first output time, as in simulate
    ds = sa.local_sensitivity(model, ["C"], ["V", "CL"], times=t, rtol=1e-10, atol=1e-14, derivative=derivative)
    CL, V = 0.2, 3.0
    ke = CL / V
    since = t[:, None] - np.arange(0.0, 35.0, 7.0)[None, :]
    T = np.where(since >= 0, 100 / V * np.exp(-ke * np.maximum(since, 0)), 0.0)
    C = T.sum(axis=1)
    np.testing.assert_allclose(ds["value"].sel(output="C").values, C, rtol=1e-8)
    np.testing.assert_allclose(ds["S"].sel(output="C", param="V").values, (T * (-1 + ke * since)).sum(1) / C,
                               atol=1e-6)
    np.testing.assert_allclose(ds["S"].sel(output="C", param="CL").values, -(T * ke * since).sum(1) / C,
                               atol=1e-6)


def test_local_scalar_outputs_and_user_function(linear_model):
    k, x0 = 0.05, 10.0
    times = np.linspace(0.0, 20.0, 2001)
    pfs_like = sa.Output("x_at_20_by_hand", lambda ds: ds["x"].sel(time=20.0))
    ds = sa.local_sensitivity(linear_model, ["x@20", "auc(x, 0, 20)", "max(x)", pfs_like], ["k", "x0"],
                              times=times, rtol=1e-10, atol=1e-12)
    S = ds["S"].sel(param="k")
    auc_dlnk = -x0 * (1 - np.exp(-20 * k)) / k + x0 * 20 * np.exp(-20 * k)  # k d/dk of x0 (1 - e^-20k) / k
    auc = x0 * (1 - np.exp(-20 * k)) / k
    np.testing.assert_allclose(float(S.sel(output="x@20")), -k * 20, atol=1e-6)
    np.testing.assert_allclose(float(S.sel(output="x_at_20_by_hand")), -k * 20, atol=1e-6)
    # trapezoid on a 0.01-day grid: relative error <= h^2 k^2 / 12 ~ 2e-9
    np.testing.assert_allclose(float(ds["value"].sel(output="auc(x, 0, 20)")), auc, rtol=1e-7)
    np.testing.assert_allclose(float(S.sel(output="auc(x, 0, 20)")), auc_dlnk / auc, atol=1e-5)
    assert float(S.sel(output="max(x)")) == pytest.approx(0.0, abs=1e-6)  # max is x0 at t = 0


def test_pathological_draws_keep_every_run_and_status(linear_model):
    """k in [-3, 0.5]: for k < about -1.94, x0 exp(-365 k) overflows (status != 0); for k > about 0.1,
    x(365) decays below atol and may come out slightly negative, so log_x = log(x/x0) is NaN with
    status 0: a failure too (status -1 in the result)."""
    params = {"k": (-3.0, 0.5), "c1": None}
    design = sa.sobol_design(sa.parameter_ranges(linear_model, params, log=False), n=64, seed=0)
    with pytest.warns(RuntimeWarning, match="runs failed"):
        batch = sa.run_design(linear_model, design, [sa.parse_output("log_x@365")])
    k, status = batch["k"].values, batch["status"].values
    y = batch["log_x"].sel(time=365.0).values
    assert batch.sizes["sample"] == design.n_runs == 64 * 4
    assert np.all(status[k > -1.8] == 0) and np.all(status[k < -2.1] != 0)
    ok = np.isfinite(y)
    growing = ok & (k < 0)  # where x stays far above atol, log_x = -365 k to the solver's accuracy
    np.testing.assert_allclose(y[growing], -365 * k[growing], rtol=1e-4)
    expected = np.where((status == 0) & ~ok, -1, status)
    assert np.any(expected == -1) and np.any(expected > 0)
    with pytest.raises(sa.FailedRunsError) as info:
        sa.sobol_indices(design, batch, "log_x@365")
    err = info.value
    np.testing.assert_array_equal(err.runs, np.flatnonzero(expected != 0))
    np.testing.assert_array_equal(err.status, expected[expected != 0])
    np.testing.assert_array_equal(err.parameters["k"].values, k[expected != 0])
    assert str(err).startswith(f"{len(err.runs)} of 256 runs of the sobol design failed (")
    with pytest.warns(RuntimeWarning, match="dropped"):
        ds = sa.sobol_indices(design, batch, "log_x@365", on_failure="drop")
    np.testing.assert_array_equal(ds["status"].values, expected)  # every run keeps its status
    blocks_ok = (expected.reshape(64, 4) == 0).all(axis=1)
    np.testing.assert_array_equal(ds["used"].values, np.repeat(blocks_ok, 4))
    assert ds.attrs["n_failed_runs"] == int((expected != 0).sum())
    assert ds.attrs["n_blocks_dropped"] == int((~blocks_ok).sum())
    # log_x(365) = -365 k depends on k alone: S1 = 1 for k and 0 for c1 on the surviving blocks
    s1, conf = ds["S1"].sel(output="log_x@365"), ds["S1_conf"].sel(output="log_x@365")
    assert abs(float(s1.sel(param="k")) - 1) < 2 * float(conf.sel(param="k"))
    assert abs(float(s1.sel(param="c1"))) < 2 * float(conf.sel(param="c1")) + 1e-12


def test_non_finite_user_output_counts_as_failure(linear_model):
    bad = sa.Output("bad", lambda ds: np.where(ds["c1"].values > 1.5, np.nan, ds["z"].sel(time=1.0).values))
    with pytest.raises(sa.FailedRunsError) as info:
        sa.morris(linear_model, [bad], ["c1", "c2"], n=4, times=[0.0, 1.0])
    assert set(info.value.status) == {-1} and "ok status but non-finite output" in str(info.value)


def test_parameter_ranges_from_bounds_priors_and_explicit(linear_model, ishigami_model):
    r = {p.name: p for p in sa.parameter_ranges(linear_model, ["k", "c3", "x0", ("c1", 1, 2)])}
    assert (r["k"].low, r["k"].high, r["k"].scale, r["k"].source) == (0.005, 0.5, "log", "bounds")
    assert (r["c3"].low, r["c3"].high, r["c3"].scale) == (0.0, 4.0, "linear")
    assert r["x0"].low == pytest.approx(10 * math.exp(-1.959964 * 0.5), rel=1e-6) and r["x0"].scale == "log"
    assert (r["c1"].low, r["c1"].high, r["c1"].source) == (1.0, 2.0, "explicit")
    with pytest.raises(SimulationError, match=r"^parameter 'a' of model 'ishigami' has neither bounds nor a prior"):
        sa.parameter_ranges(ishigami_model, ["a"])
    with pytest.raises(SimulationError, match=r"^'kk' is not a parameter of model 'linear_sensitivity' "
                                              r"\(did you mean 'k'\?\)$"):
        sa.parameter_ranges(linear_model, ["kk"])
    with pytest.raises(SimulationError, match="power of two"):
        sa.sobol(linear_model, "z@1", ["c1"], n=1000)


def test_output_errors_are_clear(linear_model):
    with pytest.raises(SimulationError) as info:
        sa.sobol(linear_model, ["x@365", "z"], ["c1"], n=8)
    assert str(info.value).startswith("outputs mix scalar ('x@365') and time-resolved ('z') quantities")
    with pytest.raises(SimulationError, match=r"^output 'y@3': 'y' is not a state, expression or observable of "
                                              r"model 'linear_sensitivity'; choose from x, z, log_x$"):
        sa.parse_outputs(["y@3"], linear_model)
    with pytest.raises(SimulationError, match=r"^cannot read output 'x@'"):
        sa.parse_output("x@")
    wrong = sa.Output("wrong", lambda ds: np.zeros(3))
    with pytest.raises(SimulationError, match=r"output 'wrong': its function returned shape \(3,\), expected \(12,\)"):
        sa.morris(linear_model, [wrong], ["c1"], n=6, times=[0.0, 1.0])


def test_plots_render(linear_model, ishigami_sobol, tmp_path):
    from immunoedit_models.plots import save_figure

    morris = sa.morris(linear_model, ["z@1", "max(x)"], ["c1", "c2", "x0"], n=4, seed=0)
    local = sa.local_sensitivity(linear_model, ["x"], ["k", "x0"], times=np.arange(0.0, 31.0))
    figures = {"tornado_morris": sa.plot_tornado(morris), "tornado_local": sa.plot_tornado(local),
               "sobol": sa.plot_sobol(ishigami_sobol), "over_time": sa.plot_time_resolved(local)}
    assert len(figures["sobol"].axes[0].patches) == 2 * 3  # S1 and ST bars for p1..p3
    assert len(figures["tornado_morris"].axes[0].patches) == 3
    assert len(figures["over_time"].axes[0].lines) == 2
    for name, fig in figures.items():
        save_figure(fig, tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 5000
    with pytest.raises(SimulationError, match="tornado plot shows local or Morris results"):
        sa.plot_tornado(ishigami_sobol)


def test_cli_sensitivity_writes_result_and_plot(specs_dir, ishigami_model, tmp_path):
    out, png = tmp_path / "s.nc", tmp_path / "s.png"
    result = CliRunner().invoke(app, ["sensitivity", str(specs_dir / "ishigami.yaml"), "--method", "sobol",
                                      "--n", "256", "--output", "x@1", "--param", "p1", "--param", "p2:-3.1416:3.1416",
                                      "--param", "p3", "--seed", "5", "--out", str(out), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert "S1" in result.output and png.stat().st_size > 5000
    saved = ie.load_result(out)
    api = sa.sobol(ishigami_model, "x@1", ["p1", ("p2", -3.1416, 3.1416), "p3"], n=256, seed=5)
    np.testing.assert_array_equal(saved["ST"].values, api["ST"].values)
    assert saved.attrs["analysis"] == "sobol" and list(saved["range_source"].values) == ["bounds", "explicit",
                                                                                          "bounds"]
    bad = CliRunner().invoke(app, ["sensitivity", str(specs_dir / "ishigami.yaml"), "--output", "x@1",
                                   "--param", "p1:0"])
    assert bad.exit_code == 1 and "--param 'p1:0' must look like NAME or NAME:LOW:HIGH" in bad.output


def test_sin_cos_in_the_grammar_and_both_printers():
    """sin/cos were added to the expression grammar for the Ishigami spec: units checked, printed for
    numba (math.sin) and JAX (jax.numpy.sin), compared against numpy."""
    from immunoedit_models.compile.jax_backend import compile_jax
    from immunoedit_models.compile.numba_backend import compile_numba
    from immunoedit_models.spec.expressions import ExpressionError, parse_expression
    from immunoedit_models.spec.units import parse_unit
    from immunoedit_models.symbolic import SymbolicModel

    with pytest.raises(ExpressionError) as info:
        parse_expression("cos(T/2) + sin(T)", {"T": parse_unit("cell")}, parse_unit("day"))
    assert (info.value.message, info.value.hint) == ("argument of cos() in 'cos(T / 2)' has unit cell",
                                                     "cos() needs a dimensionless argument")
    m = SymbolicModel.from_equations("trig", {"x": "-a*x"}, {"a": 0.5}, {"x": 1},
                                     outputs={"f": "sin(x) + cos(a*x)", "g": "sin(t)**2"})
    t_out = np.array([0.0, 1.0, 2.5])
    Y = np.array([[[0.3], [1.7], [3.0]], [[0.2], [-0.9], [4.0]]])
    P = np.array([[0.5], [2.0]])
    expected = np.stack([np.sin(Y[..., 0]) + np.cos(P * Y[..., 0]), np.broadcast_to(np.sin(t_out) ** 2, (2, 3))], -1)
    for kernels in (compile_numba(m), compile_jax(m)):
        np.testing.assert_allclose(kernels.outputs(t_out, Y, P), expected, rtol=1e-14, atol=1e-15)


def test_forward_local_sensitivities_stay_float64_in_a_fresh_process(specs_dir):
    """The numba path reduces its trajectories with jax.jvp: in a process that has not used the
    JAX backend yet (x64 off), that once returned float32 values (error ~1e-8 relative)."""
    import subprocess
    import sys

    code = (f"import numpy as np, immunoedit_models as ie; from immunoedit_models import sensitivity as sa; "
            f"m = ie.compile_model({str(specs_dir / 'linear_sensitivity.yaml')!r}); "
            f"ds = sa.local_sensitivity(m, ['x'], ['k'], times=np.array([0.0, 5.0]), rtol=1e-10, atol=1e-12); "
            f"print(ds['value'].dtype, ds['S'].dtype)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["float64", "float64"]
