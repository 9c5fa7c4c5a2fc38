"""Fit reports: Markdown plus PNG figures (fitted vs data, profiles, convergence, posterior).

Figures are plain matplotlib `Figure`s (no pyplot state), written with `plots.save_figure`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.figure import Figure

from ..plots import save_figure
from .km import kaplan_meier
from .problem import FitProblem
from .trial import observed_statistic


# ---- figures ----------------------------------------------------------------------------------
def plot_timecourse_fit(problem: FitProblem, curves: Mapping[str, pd.DataFrame]) -> Figure:
    """Measurements (points) and the fitted model (line) per observable and condition, on the
    measurement scale (after the observable's transformation)."""
    obs = list(problem.observables.values())
    fig = Figure(figsize=(5.0 * len(obs), 3.4), layout="constrained")
    axes = fig.subplots(1, len(obs), squeeze=False).ravel()
    m = problem.measurements
    for ax, o in zip(axes, obs):
        for c, (cond, curve) in enumerate(curves.items()):
            rows = m[(m["observableId"] == o.name) & (m["simulationConditionId"] == cond)]
            if rows.empty:
                continue
            h = curve[o.output].to_numpy(float)
            with np.errstate(divide="ignore", invalid="ignore"):
                h = {"lin": h, "log": np.log(h), "log10": np.log10(h)}[o.transformation]
            ax.plot(curve["time"], h, color=f"C{c}", lw=1.5, label=f"{cond}: fitted")
            ax.plot(rows["time"], rows["measurement"], "o", color=f"C{c}", ms=4, label=f"{cond}: data")
        ax.set_title(f"{o.name} = {o.transformation}({o.output}), {o.noise} noise", fontsize=9)
        ax.set_xlabel("time (day)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def plot_km_fit(problem: FitProblem, trial: xr.Dataset) -> Figure:
    """Simulated KM curves per arm (one panel per endpoint with targets) against the targets:
    reconstructed IPD as a KM curve with its 95 % band, published medians as points at S = 0.5
    with their CI, landmark rates as points with their CI."""
    curve_targets = [t for t in problem.targets if t.kind in ("ipd", "median", "landmark")]
    endpoints = [e for e in ("pfs", "os") if any(t.endpoint == e for t in curve_targets)] or ["pfs"]
    fig = Figure(figsize=(5.4 * len(endpoints), 3.8), layout="constrained")
    axes = fig.subplots(1, len(endpoints), squeeze=False).ravel()
    arms = [str(a) for a in trial["arm"].values]
    for ax, ep in zip(axes, endpoints):
        for c, arm in enumerate(arms):
            months, events = trial[f"{ep}_months"].sel(arm=arm).values, trial[f"{ep}_event"].sel(arm=arm).values
            ok = np.isfinite(months)
            sim = kaplan_meier(months[ok], events[ok]).survival_function_
            ax.step(sim.index, sim.iloc[:, 0], where="post", color=f"C{c}", lw=1.5, label=f"{arm} simulated")
            _draw_observed(ax, [t for t in curve_targets if t.endpoint == ep and t.arm == arm], arm, f"C{c}",
                           band=True)
        _km_axes(ax, ep.upper())
    return fig


def plot_km_check(problem: FitProblem, result: xr.Dataset) -> Figure:
    """Posterior predictive check of a trial fit (the KM form of a visual predictive check): per
    endpoint and arm, the 95 % band of the KM curves of the predictive trials at the estimate
    (sampling only: other cohorts of the design's size than the fit's), the wider band with
    parameter uncertainty, their median curve, and the data (reconstructed IPD as a KM curve,
    published medians and landmark rates with their CIs). An arm and endpoint without a target
    is a prediction."""
    curve_targets = [t for t in problem.targets if t.kind in ("ipd", "median", "landmark")]
    endpoints = [str(e) for e in result["ppc_endpoint"].values]
    fig = Figure(figsize=(5.4 * len(endpoints), 3.8), layout="constrained")
    axes = fig.subplots(1, len(endpoints), squeeze=False).ravel()
    months = result["ppc_month"].values
    for ax, ep in zip(axes, endpoints):
        fitted = []
        for c, arm in enumerate(str(a) for a in result["arm"].values):
            sel = {"ppc_endpoint": ep, "arm": arm}
            wide = [result[f"ppc_survival_{q}"].sel(source="parameter_and_trial", **sel).values for q in ("lower", "upper")]
            lo, mid, hi = (result[f"ppc_survival_{q}"].sel(source="trial_only", **sel).values
                           for q in ("lower", "median", "upper"))
            ax.fill_between(months, *wide, step="post", color=f"C{c}", alpha=0.10, lw=0)
            ax.fill_between(months, lo, hi, step="post", color=f"C{c}", alpha=0.25, lw=0)
            ax.step(months, mid, where="post", color=f"C{c}", lw=1.2, label=f"{arm} simulated (median, 95 % of trials)")
            observed = [t for t in curve_targets if t.endpoint == ep and t.arm == arm]
            _draw_observed(ax, observed, arm, f"C{c}", band=False)
            fitted += [arm] if observed else []
        predicted = [str(a) for a in result["arm"].values if str(a) not in fitted]
        _km_axes(ax, f"{ep.upper()}: fitted {', '.join(fitted) or 'none'}"
                     + (f"; predicted {', '.join(predicted)}" if predicted else ""))
    fig.suptitle(f"{result.attrs.get('predictive_replicates')} trials at the estimate (dark band: 95 %) and "
                 f"{result.attrs.get('predictive_draws')} from posterior draws (light band: with parameter "
                 "uncertainty)", fontsize=8)
    return fig


def _draw_observed(ax, targets, arm: str, color: str, band: bool) -> None:
    """The data of one arm's curve targets: reconstructed IPD as a dashed KM curve (with its 95 %
    band if `band`), published medians at S = 0.5 and landmark rates, with their CIs."""
    for t in targets:
        if t.kind == "ipd":
            kmf = kaplan_meier(t.data["time_months"], t.data["event"])
            sf, ci = kmf.survival_function_, kmf.confidence_interval_survival_function_
            ax.step(sf.index, sf.iloc[:, 0], where="post", color=color, lw=1.0, ls="--",
                    label=f"{arm} observed (reconstructed IPD)")
            if band:
                ax.fill_between(ci.index, ci.iloc[:, 0], ci.iloc[:, 1], step="post", color=color, alpha=0.15, lw=0)
        elif t.kind == "median":
            ax.errorbar([t.value], [0.5], xerr=[[t.value - t.ci[0]], [t.ci[1] - t.value]], fmt="o",
                        color=color, capsize=3, label=f"{arm} published median")
        else:
            ax.errorbar([t.months], [t.value], yerr=[[t.value - t.ci[0]], [t.ci[1] - t.value]], fmt="s",
                        color=color, capsize=3, label=f"{arm} published {t.months:g}-month rate")


def _km_axes(ax, title: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("months")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)


def plot_profiles(profiles: xr.Dataset) -> Figure:
    """Profile of the objective (rise above the optimum) per parameter, with the 95 % threshold."""
    names = list(profiles["parameter"].values)
    ncols = min(len(names), 3)
    nrows = math.ceil(len(names) / ncols)
    fig = Figure(figsize=(3.8 * ncols, 2.8 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    f0 = np.nanmin(profiles["profile_objective"].values)
    for ax, name in zip(axes, names):
        v = profiles["profile_value"].sel(parameter=name).values
        f = profiles["profile_objective"].sel(parameter=name).values - f0
        ok = np.isfinite(v) & np.isfinite(f)
        ax.plot(v[ok], f[ok], "o-", ms=3)
        ax.axhline(profiles["profile_objective"].attrs["threshold"], color="C3", ls="--", lw=1)
        for bound in ("ci_lower", "ci_upper"):
            b = float(profiles[bound].sel(parameter=name))
            if np.isfinite(b):
                ax.axvline(b, color="C3", lw=0.8)
        if np.all(v[ok] > 0) and np.nanmax(v[ok]) / np.nanmin(v[ok]) > 20:
            ax.set_xscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("Δ objective")
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    return fig


def plot_convergence(result: xr.Dataset) -> Figure:
    """Objective per iteration: each multistart start, or CMA-ES best/median per generation."""
    fig = Figure(figsize=(5.5, 3.4), layout="constrained")
    ax = fig.subplots()
    if "start_trace" in result:
        for s in result["start"].values:
            tr = result["start_trace"].sel(start=s).values
            ax.plot(np.arange(1, tr.size + 1), tr, lw=1, label=f"start {s}")
        ax.set_xlabel("L-BFGS-B iteration")
    if "trace_best" in result:
        it = result["iteration"].values
        ax.plot(it, result["trace_best"].values, lw=1.5, label="generation best")
        ax.plot(it, result["trace_median"].values, lw=1, label="generation median")
        ax.set_xlabel("CMA-ES generation")
    ax.set_ylabel("objective (negative log-likelihood)")
    values = np.concatenate([np.ravel(result[v].values) for v in ("start_trace", "trace_best", "trace_median")
                             if v in result])
    values = values[np.isfinite(values)]
    if values.size and values.min() > 0 and values.max() / values.min() > 100:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def plot_posterior(posterior: xr.Dataset) -> Figure:
    names = list(posterior["parameter"].values)
    fig = Figure(figsize=(3.6 * len(names), 2.8), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False).ravel()
    for ax, name in zip(axes, names):
        ax.hist(posterior["posterior"].sel(parameter=name).values.ravel(), bins=40, color="C0", alpha=0.8)
        ax.set_title(name, fontsize=9)
    return fig


# ---- Markdown -----------------------------------------------------------------------------------
def _fmt(v: float) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:.4g}"


def parameter_table(result: xr.Dataset) -> list[str]:
    """Markdown rows: estimate, bounds, profile CI and posterior summary per parameter (the NUTS
    posterior of time-course fits, or the Laplace approximation of trial fits)."""
    head = "| parameter | estimate | lower bound | upper bound | profile 95 % CI | posterior mean (2.5–97.5 %) |"
    rows = [head, "|" + " --- |" * 6]
    held = {h.strip() for h in str(result.attrs.get("held", "")).split(",")}
    for name in result["parameter"].values:
        est = float(result["estimate"].sel(parameter=name))
        lo, hi = (float(result[b].sel(parameter=name)) for b in ("bound_lower", "bound_upper"))
        ci = "–"
        if "profiled" in result.coords and name in result["profiled"].values:
            lo_ci, hi_ci = (float(result[b].sel(parameter=name)) for b in ("ci_lower", "ci_upper"))
            ci = (_fmt(lo_ci) if np.isfinite(lo_ci) else "(open)") + " – " + (_fmt(hi_ci) if np.isfinite(hi_ci) else "(open)")
        post = "–"
        if "posterior" in result:
            d = result["posterior"].sel(parameter=name).values.ravel()
            post = f"{_fmt(d.mean())} ({_fmt(np.quantile(d, 0.025))}–{_fmt(np.quantile(d, 0.975))})"
        elif "laplace_ci_lower" in result:
            lo_l, hi_l = (float(result[b].sel(parameter=name)) for b in ("laplace_ci_lower", "laplace_ci_upper"))
            post = f"Laplace: {_fmt(est)} ({_fmt(lo_l)}–{_fmt(hi_l)})"
        if name in held:
            post = "held at its start (fit.hold)"
        rows.append(f"| {name} | {_fmt(est)} | {_fmt(lo)} | {_fmt(hi)} | {ci} | {post} |")
    return rows


def target_table(targets: Sequence, simulated: Mapping[str, float], terms: Mapping[str, float],
                 result: xr.Dataset) -> list[str]:
    """Markdown section: each target's observed value, its value in the fit's own simulated trial
    and its weighted -ln L; with the predictive check (`ppc_target`), also the 95 % interval of
    the trials at the estimate (other cohorts, the design's size) and whether the observed value
    lies inside it."""
    check = "ppc_target_median" in result
    lines = ["## Targets at the estimate", "",
             "| target | kind | endpoint | arm / comparison | observed | simulated (fit's cohort) | "
             + ("trials at the estimate: median (95 % interval) | observed inside | " if check else "")
             + "weighted -ln L |",
             "| --- | --- | --- | --- | --- | --- | " + ("--- | --- | " if check else "") + "--- |"]
    inside = []
    for t in targets:
        observed = observed_statistic(t)
        row = (f"| {t.id} | {t.kind} | {_target_label(t)} | {t.arm or t.comparison or 'all arms'} | "
               f"{observed:.4g}" + (f" ({t.ci[0]:g}–{t.ci[1]:g})" if t.ci else "") + f" | {simulated[t.id]:.4g} | ")
        if check:
            m, lo, hi = (float(result[f"ppc_target_{q}"].sel(source="trial_only", target=t.id))
                         for q in ("median", "lower", "upper"))
            verdict = "–"                   # no interval: every trial lacked the statistic
            if np.isfinite(lo) and np.isfinite(hi):
                inside.append(lo <= observed <= hi)
                verdict = "yes" if inside[-1] else "**no**"
            row += f"{_fmt(m)} ({_fmt(lo)}–{_fmt(hi)}) | {verdict} | "
        lines.append(row + f"{terms[t.id]:.4g} |")
    lines += ["", "observed / simulated: the median (months) for median and ipd targets (KM of the "
              "reconstructed IPD), the HR, the landmark survival, the ORR or the biomarker prevalence."]
    if check:
        a = result.attrs
        missing = len(targets) - len(inside)
        lines += ["", f"Predictive check: {sum(inside)} of {len(inside)} observed values"
                  + (f" ({missing} target(s) without an interval)" if missing else "") + " lie inside the 95 % "
                  f"interval of the {a.get('predictive_replicates')} trials of {a.get('predictive_patients_per_arm')} "
                  "patients per arm simulated at the estimate with other cohorts than the fit's (figure "
                  "`predictive_check`). The fit's own cohort is the one its parameters were tuned on, so its "
                  "column can look better than an independent trial would."]
    return lines


def _target_label(t) -> str:
    return {"response": "ORR", "prevalence": t.biomarker}.get(t.kind, t.endpoint)


def predictive_table(result: xr.Dataset) -> list[str]:
    """Markdown section: predicted statistics with 95 % intervals from trials at the estimate
    (sampling only) and from posterior draws (parameter + sampling); empty without predictions."""
    if "predictive_median" not in result:
        return []
    a = result.attrs
    lines = ["", "## Predictions (not fitted)", "",
             f"Trials of {a.get('predictive_patients_per_arm')} patients per arm; {a.get('predictive_replicates')} at "
             f"the estimate and {a.get('predictive_draws')} from posterior draws (cohort seeds from "
             f"{a.get('predictive_seed')}). Laplace posterior from {a.get('laplace_points')} CMA-ES evaluations "
             f"(quadratic surface R² {float(a.get('laplace_r_squared', np.nan)):.3f}, residual sd "
             f"{float(a.get('laplace_residual_sd', np.nan)):.3g}, {a.get('laplace_flat_directions')} direction(s) "
             "given the flat-prior width).", "",
             "| statistic | trial replicates at the estimate: median (95 % interval) | posterior draws, "
             "parameters + trial: median (95 % interval) |", "| --- | --- | --- |"]
    for stat in result["statistic"].values:
        cell = {src: [_fmt(float(result[v].sel(source=src, statistic=stat)))
                      for v in ("predictive_median", "predictive_lower", "predictive_upper")]
                for src in ("trial_only", "parameter_and_trial")}
        t, p = cell["trial_only"], cell["parameter_and_trial"]
        lines.append(f"| {stat} | {t[0]} ({t[1]}–{t[2]}) | {p[0]} ({p[1]}–{p[2]}) |")
    return lines


def write_report(problem: FitProblem, result: xr.Dataset, out: str | Path,
                 figures: Sequence[tuple[str, Figure]], extra: Sequence[str] = ()) -> Path:
    """Write report.md and the figures (PNG) into `out`; returns the Markdown path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Fit: {problem.name}", "", *([problem.description, ""] if problem.description else []),
             f"- kind: {problem.kind}; model: `{problem.model}`; method: {result.attrs.get('method')}; "
             f"seed: {result.attrs.get('seed')}",
             *([f"- built on the calibration `{problem.calibration_path}` (its values are held; the "
                f"parameters below replace theirs)"] if problem.calibration_path else []),
             f"- best objective (negative log-likelihood): {float(result['objective']):.6g}",
             f"- created: {result.attrs.get('created', '')}; spec hash: {result.attrs.get('spec_hash', '')}",
             "", "## Parameters", "", *parameter_table(result), "", *extra]
    for name, fig in figures:
        save_figure(fig, out / f"{name}.png")
        lines += ["", f"## {name.replace('_', ' ')}", "", f"![{name}]({name}.png)"]
    if problem.sources:
        lines += ["", "## Sources", "", *(f"- {s}" for s in problem.sources)]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
