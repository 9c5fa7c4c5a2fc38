"""Trial figures: Kaplan-Meier curves with numbers at risk, waterfall, spider and forest plots.

Each function takes a trial Dataset over (`arm`, `patient`) with the trial-results names (or a
summary from `analysis.summarise_trial`) and returns a matplotlib Figure (no pyplot state); save
with `immunoedit_models.plots.save_figure`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import xarray as xr
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from immunoedit_models.errors import SimulationError
from immunoedit_models.trials.analysis import ENDPOINTS, check_alpha, check_trial, kaplan_meier, km_median
from immunoedit_models.trials.endpoints import DAYS_PER_MONTH
from immunoedit_models.trials.recist import assess

RESPONSE_COLOURS = {"CR": "#1a7f37", "PR": "#6cc04a", "SD": "#e0b000", "PD": "#d1242f", "NE": "#b0b0b0"}
ENDPOINT_TITLES = {"pfs": "Progression-free survival", "os": "Overall survival"}


def plot_km(trial: xr.Dataset, endpoint: str = "pfs", arms: Sequence[str] | None = None,
            observed: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None, ci: bool = True,
            risk_months: Sequence[float] | None = None, alpha: float = 0.05) -> Figure:
    """Kaplan-Meier curves per arm (CI bands) over a numbers-at-risk table.

    observed: optional published or reconstructed data, label -> (months, events); drawn dashed in
    the colour of the arm with the same label, else in black. risk_months: times of the at-risk
    columns (default every 6 months up to the last follow-up).
    """
    check_trial(trial, (endpoint,), "plot_km")
    arms = [str(a) for a in trial["arm"].values] if arms is None else _known_arms(trial, arms)
    check_alpha(alpha, "plot_km")
    check_observed(observed, "plot_km")
    if risk_months is not None and not _months(risk_months):
        raise SimulationError(f"plot_km: risk_months must be a list of months >= 0, e.g. [0, 6, 12], got {risk_months!r}")
    fig = Figure(figsize=(7.5, 5.6), layout="constrained")
    ax, table = fig.subplots(2, 1, gridspec_kw={"height_ratios": [5, 0.6 + 0.3 * len(arms)]}, sharex=True)
    t_all = trial[f"{endpoint}_months"].values
    t_max = float(np.nanmax(t_all))
    risk = np.arange(0.0, t_max + 1e-9, 6.0) if risk_months is None else np.asarray(risk_months, float)
    colours = {arm: f"C{i}" for i, arm in enumerate(arms)}
    for row, arm in enumerate(arms):
        months = trial[f"{endpoint}_months"].sel(arm=arm).values
        kmf = kaplan_meier(months, trial[f"{endpoint}_event"].sel(arm=arm).values, alpha)
        median = km_median(kmf)[0]
        grid = kmf.survival_function_.index.to_numpy()
        ax.step(grid, kmf.survival_function_.to_numpy()[:, 0], where="post", color=colours[arm], lw=1.6,
                label=f"{arm} (n={kmf.durations.size}, median {_fmt_months(median)})")
        if ci:
            bounds = kmf.confidence_interval_survival_function_.to_numpy()
            ax.fill_between(grid, bounds[:, 0], bounds[:, 1], step="post", color=colours[arm], alpha=0.15, lw=0)
        at_risk = (np.asarray(months)[None, :] >= risk[:, None]).sum(axis=1)
        for x, n in zip(risk, at_risk):
            table.text(x, -row, str(n), ha="center", va="center", fontsize=8, color=colours[arm])
    for label, (months, events) in (observed or {}).items():
        kmf = kaplan_meier(months, events)
        ax.step(kmf.survival_function_.index, kmf.survival_function_.to_numpy()[:, 0], where="post",
                color=colours.get(label, "k"), ls="--", lw=1.2, label=f"{label} observed")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("probability")
    ax.set_title(ENDPOINT_TITLES.get(endpoint, endpoint))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    table.set_ylim(-len(arms) + 0.5, 0.5)
    table.set_yticks(-np.arange(len(arms)), arms, fontsize=8)
    table.set_xticks(risk)
    right = max(t_max, risk[-1] if risk.size else 0.0)
    table.set_xlim(-0.04 * right, 1.02 * right)  # room for the first at-risk column
    table.set_xlabel("months")
    table.set_title("number at risk", fontsize=8, loc="left")
    for side in ("top", "right", "left"):
        table.spines[side].set_visible(False)
    table.tick_params(left=False)
    return fig


def plot_waterfall(trial: xr.Dataset, arm: str, max_bars: int = 500) -> Figure:
    """Best % change from baseline per patient, sorted, coloured by best overall response.

    More than `max_bars` patients are thinned to every k-th patient by rank (the shape is kept).
    """
    _check_arm_plot(trial, arm, ("best_pct_change", "best_response"), "max_bars", max_bars, "plot_waterfall")
    change = trial["best_pct_change"].sel(arm=arm).values
    response = trial["best_response"].sel(arm=arm).values
    keep = np.isfinite(change)
    order = np.argsort(-change[keep], kind="stable")
    change, response = change[keep][order], response[keep][order]
    step = max(1, int(np.ceil(change.size / max_bars)))
    change, response = change[::step], response[::step]
    fig = Figure(figsize=(8.0, 4.0), layout="constrained")
    ax = fig.subplots()
    ax.bar(np.arange(change.size), change, width=1.0, color=[RESPONSE_COLOURS[r] for r in response], lw=0)
    for level, ls in ((20.0, "--"), (-30.0, ":")):
        ax.axhline(level, color="k", lw=0.8, ls=ls)
    _response_legend(ax, response)
    shown = f" (1 in {step} patients, by rank)" if step > 1 else ""
    ax.set_title(f"{arm}: best change in sum of diameters{shown}", fontsize=10)
    ax.set_ylabel("best change from baseline [%]")
    ax.set_xlabel("patients")
    ax.set_xlim(-1, change.size)
    return fig


def plot_spider(trial: xr.Dataset, arm: str, max_patients: int = 100) -> Figure:
    """% change of the sum of diameters from baseline at each visit, one line per patient.

    Uses `sld_mm` over (arm, patient, scan) at `visit_day` (else the coordinate `scan_day`);
    shows the first `max_patients` evaluable patients up to their first PD visit (RECIST 1.1
    defaults), coloured by best overall response.
    """
    _check_arm_plot(trial, arm, ("sld_mm", "best_response"), "max_patients", max_patients, "plot_spider")
    if "visit_day" not in trial and "scan_day" not in trial:
        raise SimulationError("plot_spider: the trial has neither visit_day nor scan_day: the visit days are "
                              "needed (a Dataset from run_trial has them)")
    sld = trial["sld_mm"].sel(arm=arm).values
    day = trial["visit_day"].sel(arm=arm).values if "visit_day" in trial else trial["scan_day"].values
    pd_index = assess(sld, day).pd_index[:, None]
    sld = np.where((pd_index >= 0) & (np.arange(sld.shape[1]) > pd_index), np.nan, sld)
    response = trial["best_response"].sel(arm=arm).values
    months = np.broadcast_to(day, sld.shape) / DAYS_PER_MONTH
    evaluable = np.flatnonzero(np.isfinite(sld[:, 0]) & (np.isfinite(sld[:, 1:]).sum(axis=1) > 0))[:max_patients]
    change = 100.0 * (sld[evaluable] - sld[evaluable, :1]) / sld[evaluable, :1]
    segments = [np.column_stack([m, c])[np.isfinite(c)] for m, c in zip(months[evaluable], change)]
    fig = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.add_collection(LineCollection(segments, colors=[RESPONSE_COLOURS[r] for r in response[evaluable]], lw=0.9))
    ax.autoscale_view()
    for level, ls in ((20.0, "--"), (-30.0, ":")):
        ax.axhline(level, color="k", lw=0.8, ls=ls)
    _response_legend(ax, response[evaluable])
    ax.set_title(f"{arm}: change in sum of diameters ({evaluable.size} patients)", fontsize=10)
    ax.set_xlabel("months")
    ax.set_ylabel("change from baseline [%]")
    ax.grid(alpha=0.3)
    return fig


def plot_forest(summary: xr.Dataset, endpoint: str = "pfs", comparison: str | None = None) -> Figure:
    """Subgroup hazard ratios with CIs (log axis), from `hr_<endpoint>_subgroup` of a summary."""
    _check_forest(summary, endpoint, comparison)
    comparison = str(summary["comparison"].values[0]) if comparison is None else comparison
    cell = summary.sel(comparison=comparison)
    hr = cell[f"hr_{endpoint}_subgroup"].values
    lower, upper = cell[f"hr_{endpoint}_subgroup_lower"].values, cell[f"hr_{endpoint}_subgroup_upper"].values
    names = [str(s).replace("_", " ") for s in summary["subgroup"].values]
    n = cell["n_subgroup"].values
    y = -np.arange(hr.size)
    fig = Figure(figsize=(7.5, 1.2 + 0.38 * hr.size), layout="constrained")
    ax = fig.subplots()
    ax.hlines(y, lower, upper, color="k", lw=1.2)
    ax.plot(hr, y, "s", color="C0", ms=6)
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    finite = np.r_[lower, upper, 1.0][np.isfinite(np.r_[lower, upper, 1.0])]
    ticks = [t for t in (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
             if finite.min() / 1.5 <= t <= finite.max() * 1.5]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(y, [f"{name} (n={k})" for name, k in zip(names, n)], fontsize=8)
    for yi, h, lo, hi in zip(y, hr, lower, upper):
        ax.annotate(_fmt_hr(h, lo, hi), (1.0, yi), xycoords=("axes fraction", "data"), xytext=(6, 0),
                    textcoords="offset points", va="center", fontsize=8)
    ax.set_xlabel(f"hazard ratio ({ENDPOINT_TITLES.get(endpoint, endpoint)}); < 1 favours experimental")
    ax.set_title(comparison.replace("_vs_", " vs "), fontsize=10)
    return fig


def check_observed(observed: Mapping[str, tuple[np.ndarray, np.ndarray]] | None, what: str) -> None:
    """SimulationError unless observed is None or label -> (months, events) with one 0/1 event per
    month value >= 0."""
    if observed is not None and not isinstance(observed, Mapping):
        raise SimulationError(f"{what}: observed must map a label to (months, events), got {type(observed).__name__}")
    for label, data in (observed or {}).items():
        pair = tuple(data) if isinstance(data, (tuple, list)) else ()
        sizes = {np.size(x) for x in pair}
        if len(pair) != 2 or len(sizes) != 1 or 0 in sizes:
            raise SimulationError(f"{what}: observed['{label}'] must be a pair (months, events) of equal, "
                                  f"non-zero length, got {len(pair)} item(s) of sizes {sorted(sizes)}")
        months, events = (np.asarray(x, dtype=float) for x in pair)
        if not (_months(months) and np.all(np.isin(events, (0, 1)))):
            raise SimulationError(f"{what}: observed['{label}'] needs months >= 0 and events 0 (censored) "
                                  "or 1 (event)")


def _months(values) -> bool:
    """Whether values are a 1-D list of finite months >= 0."""
    try:
        at = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return False
    return at.ndim == 1 and bool(np.all(np.isfinite(at) & (at >= 0)))


def _known_arms(trial: xr.Dataset, arms: Sequence[str]) -> list[str]:
    """The requested arms, each one of the trial's (SimulationError otherwise)."""
    names = [str(a) for a in trial["arm"].values]
    chosen = [arms] if isinstance(arms, str) else list(arms)
    if not chosen:
        raise SimulationError(f"no arms to plot: name some of the trial's arms ({', '.join(names)})")
    unknown = [a for a in chosen if a not in names]
    if unknown:
        raise SimulationError(f"arm {unknown[0]!r} is not in this trial; its arms are {', '.join(names)}")
    return chosen


def _check_arm_plot(trial: xr.Dataset, arm: str, needs: tuple[str, ...], limit_name: str, limit: int,
                    what: str) -> None:
    """SimulationError unless the trial has the arm and the variables a per-arm plot draws."""
    if not isinstance(trial, xr.Dataset) or "arm" not in trial.dims:
        raise SimulationError(f"{what} takes a trial Dataset over (arm, patient), as run_trial returns; "
                              f"got {type(trial).__name__}")
    if not isinstance(arm, str):
        raise SimulationError(f"{what}: arm must be one arm's name, got {arm!r}")
    _known_arms(trial, [arm])
    missing = [name for name in needs if name not in trial]
    if missing:
        raise SimulationError(f"{what}: the trial lacks {', '.join(missing)}; a Dataset from run_trial has them")
    if not (isinstance(limit, (int, np.integer)) and not isinstance(limit, bool) and limit >= 1):
        raise SimulationError(f"{what}: {limit_name} must be an integer >= 1, got {limit!r}")


def _check_forest(summary: xr.Dataset, endpoint: str, comparison: str | None) -> None:
    """SimulationError unless the summary has subgroup HRs of this endpoint and comparison."""
    if endpoint not in ENDPOINTS:
        raise SimulationError(f"plot_forest: unknown endpoint {endpoint!r}; choose one of {', '.join(ENDPOINTS)}")
    if not isinstance(summary, xr.Dataset) or f"hr_{endpoint}_subgroup" not in summary or "comparison" not in summary.coords:
        raise SimulationError(f"plot_forest needs a summary with hr_{endpoint}_subgroup over (comparison, "
                              "subgroup): summarise_trial(trial, comparisons) with subgroups")
    names = [str(c) for c in summary["comparison"].values]
    if comparison is not None and comparison not in names:
        raise SimulationError(f"plot_forest: comparison {comparison!r} is not in the summary; its comparisons are "
                              f"{', '.join(names)}")


def _response_legend(ax, shown: np.ndarray) -> None:
    from matplotlib.patches import Patch
    present = [r for r in RESPONSE_COLOURS if r in set(shown)]
    ax.legend(handles=[Patch(color=RESPONSE_COLOURS[r], label=r) for r in present], fontsize=8, loc="upper right")


def _fmt_months(value: float) -> str:
    return f"{value:.1f} mo" if np.isfinite(value) else "not reached"


def _fmt_hr(hr: float, lower: float, upper: float) -> str:
    return f"{hr:.2f} ({lower:.2f}-{upper:.2f})" if np.isfinite(hr) else "not estimable"
