"""Time-course fitting: the differentiable simulator, the PEtab-style objective, multistart,
profiles, NUTS, checkpoint/resume and the `fit` CLI.

References: the benchmark protocol's J = 436.555 (../shared/benchmarks/README.md); the closed-form
one-compartment PK solution (gradients through dose factors); ordinary least squares for the
exponential-growth model ln T = ln T0 + r t (linear in (ln T0, r), so the maximum-likelihood
estimate, the profile-likelihood CI and the conjugate Gaussian posterior are all closed form).
"""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

import immunoedit_models as ie
from immunoedit_models.cli import app
from immunoedit_models.errors import CompileError, FitError, SimulationError
from immunoedit_models.fit import fit, load_problem, multistart, nuts_posterior, profile_likelihood
from immunoedit_models.fit.timecourse import TimecourseObjective, timecourse_objective
from immunoedit_models.simulate.differentiable import differentiable_simulator

SIGMA = 0.2
TIMES = np.arange(0.0, 16.0, 2.0)
PRIOR_LNT0 = (math.log(1e6), 1.0)     # lognormal prior of T0: median 1e6, sigma 1
PRIOR_R = (0.05, 0.05)                 # normal prior of r


@pytest.fixture(scope="module")
def growth_problem(tmp_path_factory):
    """Exponential growth observed as ln T with normal noise (sigma 0.2), 8 points, fixed seed."""
    folder = tmp_path_factory.mktemp("growth")
    (folder / "growth.yaml").write_text(
        "name: exponential_growth\nstates:\n  T: {unit: cell, initial: T0}\n"
        "parameters:\n  T0: {value: 1e6, unit: cell}\n  r: {value: 0.1, unit: 1/day}\n"
        "flows:\n  growth: {to: T, rate: r*T}\n")
    y = math.log(1e6) + 0.1 * TIMES + np.random.default_rng(7).normal(0, SIGMA, TIMES.size)
    rows = "".join(f"lnT\tc\t{t:g}\t{float(v)!r}\n" for t, v in zip(TIMES, y))
    (folder / "measurements.tsv").write_text("observableId\tsimulationConditionId\ttime\tmeasurement\n" + rows)
    (folder / "problem.yaml").write_text(f"""
name: growth
kind: timecourse
model: growth.yaml
solver: {{rtol: 1.0e-9, atol: 1.0e-9, method: tsit5}}
conditions: {{c: {{}}}}
observables:
  lnT: {{output: T, transformation: log, noise: normal, sigma: {SIGMA}}}
measurements: measurements.tsv
parameters:
  T0: {{bounds: [1.0e4, 1.0e8], scale: log, prior: {{distribution: lognormal, median: 1.0e6, sigma: {PRIOR_LNT0[1]}}}}}
  r: {{bounds: [-0.5, 0.5], scale: lin, prior: {{distribution: normal, mean: {PRIOR_R[0]}, sd: {PRIOR_R[1]}}}}}
fit: {{method: multistart, n_starts: 3, seed: 0, max_iter: 100, profiles: true, profile_points: 6}}
""")
    return load_problem(folder), y


def _ols(y):
    X = np.c_[np.ones_like(TIMES), TIMES]
    beta = np.linalg.solve(X.T @ X, X.T @ y)
    return X, beta


# ---- the differentiable simulator ----------------------------------------------------------------
def test_dosed_gradient_through_dose_factor_matches_closed_form(specs_dir):
    """C(t) = sum_k 100/V exp(-CL/V (t - t_k)) for boluses at days 0, 7, ..., 28: values and the
    gradient w.r.t. (ln CL, ln V) of a projection of C and the amount C V (V enters the dose factor
    1/V and the elimination rate)."""
    model = ie.compile_model(specs_dir / "pk_one_compartment.yaml", backend="jax")
    times = np.array([1.0, 6.5, 7.0, 10.0, 30.0])
    f = differentiable_simulator(model, times, ["CL", "V"], outputs=["C", "amount"], log_params=True,
                                 rtol=1e-10, atol=1e-12, method="tsit5", t0=0.0)
    doses = np.arange(0.0, 35.0, 7.0)

    def exact(theta):
        cl, v = jnp.exp(theta)
        dt = times[:, None] - doses[None, :]
        c = jnp.sum(jnp.where(dt >= 0, 100.0 / v * jnp.exp(-cl / v * jnp.maximum(dt, 0.0)), 0.0), axis=1)
        return jnp.stack([c, c * v], axis=1)

    theta = jnp.asarray(f.theta0)
    w = jnp.arange(1.0, 11.0).reshape(5, 2)  # a fixed projection: one reverse pass checks both columns

    def projected(fun):
        return lambda th: (jnp.sum(w * fun(th)), fun(th))

    (_, values), grad = jax.jit(jax.value_and_grad(projected(f), has_aux=True))(theta)
    (_, exact_values), exact_grad = jax.value_and_grad(projected(exact), has_aux=True)(theta)
    np.testing.assert_allclose(np.asarray(values), np.asarray(exact_values), rtol=1e-8)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(exact_grad), rtol=1e-7)


def test_differentiable_simulator_errors(specs_dir):
    numba_model = ie.compile_model(specs_dir / "pk_one_compartment.yaml", backend="numba")
    with pytest.raises(CompileError, match="needs a model compiled with backend='jax'"):
        differentiable_simulator(numba_model, [0.0, 1.0], ["CL"])
    jax_model = ie.compile_model(specs_dir / "pk_one_compartment.yaml", backend="jax")
    with pytest.raises(SimulationError, match="'CLx' is not a parameter of model 'pk_one_compartment' "
                                              r"\(did you mean 'CL'\?\)"):
        differentiable_simulator(jax_model, [0.0, 1.0], ["CLx"])


# ---- the reference problem -----------------------------------------------------------------------
def test_reference_problem_reproduces_the_protocol_objective(shared_dir):
    """J = 0.5 sum (ln T(t_i) - d_i)^2 = 436.555 at the nominal parameters (benchmark README), with
    the problem's numba backend (forward sensitivities) and with JAX; their gradients agree."""
    problem = load_problem("fitting/reference_timecourse")
    obs = json.loads((shared_dir / "benchmarks" / "observations.json").read_text())
    np.testing.assert_array_equal(problem.measurements["measurement"], obs["logT"])
    obj = timecourse_objective(problem)
    assert obj.model.backend == "numba"
    nominal = dict(zip(obj.model.parameters, obj.model.symbolic.param_values))
    x = problem.parameters.to_x({n: nominal[n] for n in problem.parameters.names})
    constant = 20 * 0.5 * math.log(2 * math.pi)
    value, grad = obj.value_and_grad(x)
    assert value - constant == pytest.approx(436.555, abs=5e-4)
    jax_obj = TimecourseObjective(dataclasses.replace(problem, backend="jax", solver=dataclasses.replace(
        problem.solver, method="kvaerno5")))
    J = float(jax.jit(lambda x: jax_obj.nll(x, constants=False))(x))
    assert J == pytest.approx(436.555, abs=5e-4)
    assert jax_obj.value(x) == pytest.approx(J + constant, rel=1e-12)
    np.testing.assert_allclose(grad, jax_obj.value_and_grad(x)[1], rtol=1e-5)


# ---- optimisation, profiles, posterior ---------------------------------------------------------
def test_multistart_finds_the_least_squares_estimate_and_resumes_exactly(growth_problem, tmp_path):
    problem, y = growth_problem
    obj = timecourse_objective(problem)
    _, beta = _ols(y)
    full = multistart(obj.value_and_grad, problem.parameters, 3, seed=0, max_iter=100)
    best = min(full, key=lambda r: r.fun)
    np.testing.assert_allclose(best.x, beta, rtol=1e-6)

    class Killed(Exception):
        pass

    def kill_after_two(i, result):
        if i == 1:
            raise Killed

    ckpt = tmp_path / "multistart.pkl"
    with pytest.raises(Killed):
        multistart(obj.value_and_grad, problem.parameters, 3, seed=0, max_iter=100, checkpoint=ckpt,
                   on_start=kill_after_two)
    resumed = multistart(obj.value_and_grad, problem.parameters, 3, seed=0, max_iter=100, checkpoint=ckpt,
                         on_start=lambda i, r: pytest.fail("finished starts must not rerun") if i < 2 else None)
    for a, b in zip(full, resumed):
        np.testing.assert_array_equal(a.x, b.x)
        assert a.fun == b.fun and a.trace == b.trace
    with pytest.raises(FitError, match="written by a different fit"):
        multistart(obj.value_and_grad, problem.parameters, 3, seed=1, max_iter=100, checkpoint=ckpt)


def test_numba_forward_sensitivities_fit_the_least_squares_estimate(growth_problem):
    """backend: numba (forward sensitivities of Rodas5P): the same objective and gradient as JAX's
    autodiff, and multistart reaches the closed-form least-squares estimate."""
    problem, y = growth_problem
    numba_problem = dataclasses.replace(problem, backend="numba",
                                        solver=dataclasses.replace(problem.solver, method=None))
    obj_numba = TimecourseObjective(numba_problem)
    obj_jax = timecourse_objective(problem)
    x = np.array([math.log(2e6), 0.07])
    v_n, g_n = obj_numba.value_and_grad(x)
    v_j, g_j = obj_jax.value_and_grad(x)
    assert obj_numba.model.backend == "numba"
    assert v_n == pytest.approx(v_j, rel=1e-8)
    np.testing.assert_allclose(g_n, g_j, rtol=1e-6)
    _, beta = _ols(y)
    best = min(multistart(obj_numba.value_and_grad, problem.parameters, 2, seed=0, max_iter=100), key=lambda r: r.fun)
    np.testing.assert_allclose(best.x, beta, rtol=1e-6)
    with pytest.raises(FitError, match="solver method 'tsit5' is a JAX method"):
        TimecourseObjective(dataclasses.replace(problem, backend="numba"))


def test_profile_likelihood_ci_is_the_exact_linear_gaussian_interval(growth_problem):
    problem, y = growth_problem
    obj = timecourse_objective(problem)
    X, beta = _ols(y)
    f_best = obj.value(beta)
    prof = profile_likelihood(obj.value_and_grad, problem.parameters, beta, f_best, n_points=6)
    se = np.sqrt(np.diag(np.linalg.inv(X.T @ X))) * SIGMA
    z = 1.959963984540054  # chi2(1, 0.95) / 2 = z^2 / 2: the profile CI is beta +- z se
    ci = np.stack([prof["ci_lower"].values, prof["ci_upper"].values], axis=1)     # rows T0, r
    got = np.array([np.log(ci[0]), ci[1]])                                          # T0 on its fit scale
    exact = np.stack([beta - z * se, beta + z * se], axis=1)
    assert np.all(np.abs(got - exact) < 1e-3 * se[:, None]), (got, exact)   # located to ~1e-4 se


@pytest.mark.parametrize("backend", ["jax", "numba"])
def test_nuts_posterior_matches_the_conjugate_gaussian(growth_problem, backend):
    """The sampler sees only value_and_grad: JAX autodiff, or numba forward sensitivities."""
    problem, y = growth_problem
    obj = timecourse_objective(problem) if backend == "jax" else TimecourseObjective(dataclasses.replace(
        problem, backend="numba", solver=dataclasses.replace(problem.solver, method=None)))
    X, beta = _ols(y)
    prior_mean = np.array([PRIOR_LNT0[0], PRIOR_R[0]])
    prior_prec = np.diag([PRIOR_LNT0[1] ** -2, PRIOR_R[1] ** -2])
    cov = np.linalg.inv(X.T @ X / SIGMA**2 + prior_prec)
    mean = cov @ (X.T @ y / SIGMA**2 + prior_prec @ prior_mean)
    post = nuts_posterior(obj.raw_value_and_grad, problem.parameters, beta, num_warmup=200, num_samples=300, seed=3)
    x = post["posterior_fit_scale"].values.reshape(-1, 2)
    ess = post["ess"].values
    assert np.all(post["r_hat"].values < 1.05) and post.attrs["divergences"] == 0
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(x.mean(axis=0) - mean) < 4 * sd / np.sqrt(ess))     # Monte Carlo error of the mean
    np.testing.assert_allclose(x.std(axis=0), sd, rtol=0.2)
    np.testing.assert_allclose(np.exp(x[:, 0]), post["posterior"].values.reshape(-1, 2)[:, 0], rtol=1e-12)


# ---- end to end: fit() and the CLI -------------------------------------------------------------
def test_fit_cli_writes_results_and_resumes(growth_problem, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    problem, y = growth_problem
    _, beta = _ols(y)
    out = tmp_path / "out"
    runner = CliRunner()
    first = runner.invoke(app, ["fit", str(problem.folder), "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert "objective" in first.output
    result = ie.load_result(out / "fit.nc")
    np.testing.assert_allclose(np.log(result["estimate"].sel(parameter="T0")), beta[0], rtol=1e-6)
    assert np.isfinite(result["ci_lower"].values).all() and result.attrs["problem"] == "growth"
    for name in ("report.md", "fitted_vs_data.png", "profiles.png", "convergence.png", "calibration.yaml"):
        assert (out / name).stat().st_size > 0
    assert "| r |" in (out / "report.md").read_text()
    again = runner.invoke(app, ["fit", str(problem.folder), "--out", str(out)])
    assert again.exit_code == 1 and "--resume" in again.output
    resumed = runner.invoke(app, ["fit", str(problem.folder), "--out", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    np.testing.assert_array_equal(ie.load_result(out / "fit.nc")["estimate"], result["estimate"])


def test_fit_killed_after_a_start_resumes_to_the_same_result(growth_problem, tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    problem, _ = growth_problem
    whole = fit(problem, tmp_path / "whole")

    class Killed(Exception):
        pass

    def kill(stage, iteration, state):
        if stage == "multistart" and iteration == 0:
            raise Killed

    with pytest.raises(Killed):
        fit(problem, tmp_path / "killed", callback=kill)
    assert not (tmp_path / "killed" / "fit.nc").exists()
    resumed = fit(problem, tmp_path / "killed", resume=True)
    for name in ("estimate", "start_objective", "start_estimate", "ci_lower", "ci_upper"):
        np.testing.assert_array_equal(resumed[name].values, whole[name].values)
