"""The `immunoedit` command line (typer)."""

from __future__ import annotations

import functools
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import ImmunoeditError, SpecError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="immunoedit: mechanistic models of cancer immunoediting.")
console = Console()
err = Console(stderr=True)


def _keep_jax_compiles() -> None:
    """Let JAX keep this process's compiled solves on disk, in `cache_root() / "jax"`, as numba does.

    JAX 0.10 does not write an executable with host callbacks to its persistent cache, and
    diffrax's input checks (`saveat.ts` sorted and inside [t0, t1], the sign of dt0) are
    `equinox.error_if` callbacks. `EQX_ON_ERROR=nan` compiles them without callbacks. The solves
    lose nothing: they run with throw=False (a failure is a status), and `JaxKernels.solve`
    checks the same inputs before it calls diffrax. Both are environment variables, read when
    jax and equinox are first imported, so they are set here, before any command imports them,
    and only where the user has not set them. Once either is imported (the CLI called from Python)
    they would change nothing in this process and are left alone.
    """
    if "jax" in sys.modules or "equinox" in sys.modules:
        return
    from .compile import cache_root

    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache_root() / "jax"))
    os.environ.setdefault("EQX_ON_ERROR", "nan")


@app.callback()
def _set_up_process() -> None:
    """Show the package's progress messages (e.g. a first-use compile) on stderr; keep JAX's
    compiled solves on disk."""
    _keep_jax_compiles()
    import logging

    from rich.logging import RichHandler

    logger = logging.getLogger("immunoedit_models")
    if not logger.handlers:
        logger.addHandler(RichHandler(console=err, show_time=False, show_path=False))
        logger.setLevel(logging.INFO)


def _fail(exc: Exception) -> None:
    """Print `error: <message>` (the message verbatim: user text such as '[/]' or ':x:' is not
    rich markup or an emoji code) and exit with 1."""
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True, emoji=False,
              soft_wrap=True)
    raise typer.Exit(code=1)


@app.command()
def models() -> None:
    """List the built-in specs, one line each."""
    from .spec.loader import builtin_specs, load_spec

    # one line per spec: the description column takes what the others leave and ends in "…"
    table = Table(show_header=True, header_style="bold", box=None, expand=True)
    for col in ("name", "kind", "size"):
        table.add_column(col, no_wrap=True)
    table.add_column("description", no_wrap=True, overflow="ellipsis", ratio=1)
    for name in builtin_specs():
        try:
            spec = load_spec(name)
        except SpecError as exc:
            table.add_row(name, "?", f"[red]{len(exc.issues)} problems[/]", "run `immunoedit validate`")
            continue
        size = f"{len(spec.states)} states, {len(spec.parameters)} params"
        table.add_row(name, spec.kind, size, spec.description.split(". ")[0])
    console.print(table)


@app.command()
def validate(spec: str = typer.Argument(..., help="a model spec or trial design (built-in name or YAML "
                                         "path), or a fitting problem (folder or problem.yaml)")) -> None:
    """Check a model spec, trial design or fitting problem; on errors print every problem
    (file:line: item: message) and exit with 1."""
    check = {"model": _validated_model, "trial": _validated_trial, "problem": _validated_problem}
    try:
        summary = check[_document_kind(spec)](spec)
    except ImmunoeditError as exc:
        err.print(str(exc), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(code=1)
    console.print(f"[green]ok[/] {escape(summary)}", highlight=False)


def _document_kind(text: str) -> str:
    """What `validate` was given: 'problem' (a folder or problem.yaml), 'trial' (a file with arms,
    or a built-in trial name) or 'model'."""
    from .spec.loader import builtin_specs, read_yaml
    from .trials.design import builtin_trials

    path = Path(text)
    if path.is_dir() or path.name == "problem.yaml":
        return "problem"
    if path.is_file():
        doc = read_yaml(path, [])       # a file that does not parse is reported by its loader
        keys = doc if isinstance(doc, dict) else {}
        return "trial" if "arms" in keys else "problem" if "targets" in keys else "model"
    return "trial" if text not in builtin_specs() and text in builtin_trials() else "model"


def _validated_model(spec: str) -> str:
    from .spec.loader import load_spec

    return load_spec(spec).summary()


def _validated_trial(spec: str) -> str:
    """The design, its model spec, and that the model declares what the design doses and reads."""
    from .errors import SpecError
    from .trials.design import load_trial
    from .trials.run import model_issues

    design = load_trial(spec)
    issues = model_issues(design)
    if issues:
        raise SpecError(issues, what="trial design")
    n_scans = design.scans.days(design.horizon_days).size - 1
    return (f"trial {design.name}: model {design.model}, arms {', '.join(design.arms)}, "
            f"{design.patients_per_arm} patients per arm, {n_scans} scans after baseline over "
            f"{design.data_cut_months:g} months, visits {design.visits.describe()}")


def _validated_problem(spec: str) -> str:
    """Everything `immunoedit fit` reads before it compiles: the problem, its model spec and trial
    design, and the free parameters' names in the model."""
    from .errors import SpecError
    from .fit.problem import check_free_parameters, load_problem
    from .spec.loader import load_spec
    from .trials.design import load_trial
    from .trials.run import model_issues

    problem = load_problem(spec)
    model = load_spec(problem.model_path())
    if problem.trial:
        issues = model_issues(load_trial(problem.trial_path()))
        if issues:
            raise SpecError(issues, what="trial design")
    check_free_parameters(problem, model.name, model.parameters)
    data = (f"{len(problem.measurements)} measurements" if problem.measurements is not None
            else f"{len(problem.targets)} targets")
    return (f"fitting problem {problem.name} ({problem.kind}): model {problem.model}, "
            f"{len(problem.parameters.names)} free parameters, {data}")


def _parse_assignments(items: list[str], what: str) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise typer.BadParameter(f"{what} '{item}' must look like NAME=NUMBER")
    return out


@app.command()
def simulate(
    spec: str = typer.Argument(..., help="built-in name or path to a spec YAML file"),
    days: float = typer.Option(365.0, help="simulate from day 0 to this day (daily outputs)"),
    backend: str = typer.Option("numba", help="numba | jax"),
    param: list[str] = typer.Option([], "--param", "-p", help="parameter override NAME=VALUE (repeatable)"),
    initial: list[str] = typer.Option([], "--initial", "-i", help="initial state NAME=VALUE (repeatable)"),
    regimen: Optional[str] = typer.Option(None, help="regimen name from the spec ('none' for untreated)"),
    rtol: float = typer.Option(1e-6, help="relative tolerance"),
    atol: float = typer.Option(1e-9, help="absolute tolerance"),
    steady_state: bool = typer.Option(False, help="start from the untreated steady state"),
    out: Optional[Path] = typer.Option(None, help="write the result (.nc netCDF or .zarr)"),
    plot: Optional[Path] = typer.Option(None, help="write a PNG of every state over time"),
) -> None:
    """Simulate one dosed trajectory and print a summary."""
    from . import compile_model, load_spec
    from . import simulate as run

    try:
        _check_targets([out], [plot])
        params, init = _parse_assignments(param, "--param"), _parse_assignments(initial, "--initial")
        if backend == "numba":
            _solver_in_background("single")
        t0 = time.perf_counter()
        model = compile_model(load_spec(spec), backend=backend)
        t1 = time.perf_counter()
        once = functools.partial(run, model, times=np.arange(0.0, days + 0.5, 1.0), params=params,
                                 initial=init, regimen=regimen, rtol=rtol, atol=atol,
                                 steady_state=steady_state)
        ds = once()
        t2 = time.perf_counter()
    except (ImmunoeditError, typer.BadParameter) as exc:
        _fail(exc)
    _print_summary(ds, *_compile_and_run_seconds(once, t1 - t0, t2 - t1, backend))
    from .plots import plot_trajectories

    _write(ds, out, plot, plot_trajectories)


def _compile_and_run_seconds(once: Callable[[], Any], compile_s: float, first_s: float,
                             backend: str) -> tuple[float, float]:
    """(compile, run) seconds of a simulation, as the benchmarks count them. The first call
    `once()` (first_s) also loads the compiled numba solver, or traces and compiles the JAX one:
    it is timed again (with numba only when it was quick, under 1 s), and the extra time of the
    first call counts as compilation."""
    if backend != "jax" and first_s >= 1.0:
        return compile_s, first_s
    with warnings.catch_warnings():     # a failed run has warned once already
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        once()
        run_s = time.perf_counter() - t
    return compile_s + max(0.0, first_s - run_s), run_s


def _solver_in_background(entry: str) -> None:
    """On a first run after installing, compile the numba solver loop `entry` ('single' or
    'batch') in a helper process while this one loads and compiles the model
    (`compile_in_background`); nothing when numba's cache has it."""
    from .compile.numba_backend import compile_in_background

    compile_in_background(entry)


def _check_targets(results: Sequence[Optional[Path]] = (), figures: Sequence[Optional[Path]] = ()) -> None:
    """Refuse bad output paths (an unknown suffix, a user's directory) before any work is done."""
    from .io.results import writable_target
    from .plots import figure_target

    for path in results:
        if path is not None:
            writable_target(path)
    for path in figures:
        if path is not None:
            figure_target(path)


def _write(ds, out: Optional[Path], plot: Optional[Path], figure) -> None:
    """Save the result (netCDF/zarr) and its figure, each when a path is given."""
    from . import save_result
    from .plots import save_figure

    if out is not None:
        save_result(ds, out)
        console.print(f"wrote {escape(str(out))}")
    if plot is not None:
        save_figure(figure(ds), plot)
        console.print(f"wrote {escape(str(plot))}")


def _print_summary(ds, compile_s: float, run_s: float) -> None:
    status = int(ds["status"])
    console.print(f"[bold]{ds.attrs['model']}[/] | backend {ds.attrs['backend']} ({ds.attrs['solver']}, "
                  f"rtol {ds.attrs['rtol']:g}, atol {ds.attrs['atol']:g}) | {ds.attrs['regimen']}",
                  highlight=False)
    console.print(f"status {status} ({'ok' if status == 0 else 'FAILED'}), {int(ds['n_steps'])} steps, "
                  f"compile {compile_s:.2f} s, run {run_s * 1e3:.1f} ms", highlight=False)
    table = Table(box=None, header_style="bold")
    for col in ("state", "unit", f"day {ds.time.values[0]:g}", "min", "max", f"day {ds.time.values[-1]:g}"):
        table.add_column(col, justify="right" if col != "state" else "left")
    for name in (v for v in ds.data_vars if ds[v].attrs.get("kind") == "state"):
        v = ds[name].values
        table.add_row(name, ds[name].attrs.get("units", ""), *(f"{x:.4g}" for x in (v[0], np.nanmin(v),
                                                                                   np.nanmax(v), v[-1])))
    console.print(table)


def _range(text: str, option: str) -> tuple[str, float, float]:
    name, _, rest = text.partition(":")
    lo, _, hi = rest.partition(":")
    try:
        return name, float(lo), float(hi)
    except ValueError:
        raise typer.BadParameter(f"{option} '{text}' must look like NAME:LOW:HIGH") from None


@app.command("phase-map")
def phase_map_command(
    spec: str = typer.Argument(..., help="built-in name or path to a spec YAML file"),
    x: str = typer.Option(..., help="x-axis parameter NAME:LOW:HIGH"),
    y: str = typer.Option(..., help="y-axis parameter NAME:LOW:HIGH"),
    n: int = typer.Option(30, help="grid points per axis"),
    log: bool = typer.Option(True, help="log-spaced axes (when both bounds are positive)"),
    days: float = typer.Option(3650.0, help="simulated horizon in days"),
    initial: list[str] = typer.Option([], "--initial", "-i", help="inoculum NAME=VALUE (repeatable)"),
    tumour: str = typer.Option("T", help="the tumour state"),
    backend: str = typer.Option("numba", help="numba | jax"),
    out: Path = typer.Option(Path("phase_map.png"), help="PNG of the map"),
    data: Optional[Path] = typer.Option(None, help="also write the labelled grid (.nc)"),
) -> None:
    """Sweep two parameters, label each run elimination / equilibrium / escape, draw the map."""
    from . import compile_model, save_result
    from .phases import PhaseCriteria, phase_map, plot_phase_map
    from .plots import save_figure

    try:
        _check_targets([data], [out])
        xr_, yr_ = _range(x, "--x"), _range(y, "--y")
        model = compile_model(spec, backend=backend)
        ds = phase_map(model, xr_, yr_, n=n, log_x=log and xr_[1] > 0, log_y=log and yr_[1] > 0, days=days,
                       initial=_parse_assignments(initial, "--initial"), criteria=PhaseCriteria(tumour=tumour))
    except (ImmunoeditError, typer.BadParameter) as exc:
        _fail(exc)
    counts = {p: int((ds["phase"].values == p).sum()) for p in ("elimination", "equilibrium", "escape", "failed")}
    console.print(f"{escape(spec)}: {n}x{n} runs over {days:g} days: "
                  + ", ".join(f"{k} {v}" for k, v in counts.items() if v), highlight=False)
    save_figure(plot_phase_map(ds), out)
    console.print(f"wrote {escape(str(out))}")
    if data is not None:
        save_result(ds.drop_vars("phase").assign(phase=ds["phase"].astype(str)), data)
        console.print(f"wrote {escape(str(data))}")


@app.command()
def trial(
    design: str = typer.Argument(..., help="built-in trial (impower150, relativity047, high_dose_il2) or a path"),
    patients: Optional[int] = typer.Option(None, min=1, help="patients per arm (default: the design's)"),
    seed: int = typer.Option(0, help="random seed: same seed, same trial"),
    out: Path = typer.Option(Path("trial.nc"), help="trial results (.nc or .zarr)"),
    report: Optional[Path] = typer.Option(None, help="write a Markdown/HTML report with figures here"),
    calibration: Optional[Path] = typer.Option(None, help="a calibration folder (fitting/<problem>) "
                                               "whose calibration.yaml sets priors, values and survival"),
) -> None:
    """Run an in-silico trial: virtual patients, the trial's schedules, RECIST, PFS/OS, KM and HRs."""
    from . import save_result
    from .trials import load_trial, run_trial
    from .trials.report import write_report

    try:
        _check_targets([out])
        _solver_in_background("batch")
        spec = load_trial(design)
        settings = _calibration(calibration) if calibration is not None else {}
        start = time.perf_counter()
        ds = run_trial(spec, patients_per_arm=patients, seed=seed, progress=True, **settings)
    except (ImmunoeditError, typer.BadParameter) as exc:
        _fail(exc)
    _print_trial(ds, time.perf_counter() - start)
    if calibration is None:
        console.print("[yellow]patients drawn from the spec's priors (uncalibrated); "
                      "--calibration fitting/<problem> draws them from a fitted calibration[/yellow]")
    else:
        ds.attrs["calibration_path"] = str(calibration.resolve())
    save_result(ds, out)
    console.print(f"wrote {escape(str(out))}")
    if report is not None:
        console.print(f"wrote {escape(str(write_report(ds, report)))}")


def _calibration(folder: Path) -> dict:
    """The run_trial keywords (priors, fixed, survival) of a calibration folder's calibration.yaml."""
    from ruamel.yaml import YAML

    path = folder / "calibration.yaml" if folder.is_dir() else folder
    if not path.is_file():
        raise typer.BadParameter(f"no calibration at {path}: run `immunoedit fit {folder}` first")
    data = YAML(typ="safe").load(path.read_text(encoding="utf-8")) or {}
    return {k: data[k] for k in ("priors", "fixed", "survival") if data.get(k)}


def _print_trial(ds, seconds: float) -> None:
    from .trials.report import number_text

    table = Table(title=f"{ds.attrs.get('trial')}: {ds.sizes['patient']} patients per arm, "
                        f"seed {ds.attrs.get('seed')}, {seconds:.1f} s")
    for col in ("arm", "median PFS (mo)", "median OS (mo)", "ORR"):
        table.add_column(col)
    for arm in ds.arm.values:
        s = ds.sel(arm=arm)
        table.add_row(str(arm), number_text(s.pfs_median_months), number_text(s.os_median_months),
                      f"{float(s.orr):.1%}")
    console.print(table)
    for c in (ds["comparison"].values if "comparison" in ds.coords else ()):
        s = ds.sel(comparison=c)
        console.print(f"{c}: HR PFS {float(s.hr_pfs):.2f} ({float(s.hr_pfs_lower):.2f}-{float(s.hr_pfs_upper):.2f}),"
                      f" HR OS {float(s.hr_os):.2f} ({float(s.hr_os_lower):.2f}-{float(s.hr_os_upper):.2f})",
                      highlight=False)
    if ds.attrs.get("failed_runs"):
        console.print(f"[yellow]{ds.attrs['failed_runs']} patients' simulations failed; see `status`[/yellow]")


@app.command("sensitivity")
def sensitivity_command(
    spec: str = typer.Argument(..., help="built-in name or path to a spec YAML file (with --trial: a trial "
                                         "design, e.g. impower150)"),
    method: str = typer.Option("sobol", help="sobol | morris | local"),
    output: list[str] = typer.Option([], "--output", "-o", help="'T@365', 'auc(T, 0, 365)', 'max(E)' or 'T' "
                                                                "(time-resolved); with --trial 'pfs@12:ARM', "
                                                                "'os_median:ARM', 'orr:ARM', 'hr_os:EXP_vs_CTL'; "
                                                                "repeatable"),
    param: list[str] = typer.Option([], "--param", "-p", help="NAME:LOW:HIGH, or NAME for the spec's bounds/prior "
                                                              "(repeatable; default: all with bounds or priors); "
                                                              "with --trial also NAME.KEY:LOW:HIGH, a value of a "
                                                              "population prior (r_tumour.median:0.01:0.03)"),
    n: Optional[int] = typer.Option(None, help="Sobol base samples (power of two; runs n(k+2)), default 1024 "
                                               "(--trial: 64); Morris trajectories, default 20 (--trial: 10)"),
    backend: str = typer.Option("numba", help="numba | jax | cuda"),
    seed: int = typer.Option(0, help="seed of the design and the bootstrap"),
    scale: str = typer.Option("auto", help="auto (log for ranges spanning >= 10x or log priors) | linear | log"),
    days: Optional[float] = typer.Option(None, help="daily output grid up to this day (default: from the outputs)"),
    regimen: Optional[str] = typer.Option(None, help="regimen name from the spec ('none' for untreated)"),
    rtol: Optional[float] = typer.Option(None, help="relative tolerance [default: 1e-6; --trial: the design's]"),
    atol: Optional[float] = typer.Option(None, help="absolute tolerance [default: 1e-9; --trial: the design's]"),
    on_failure: str = typer.Option("raise", help="raise | drop (leave out design blocks with failed runs)"),
    out: Optional[Path] = typer.Option(None, help="write the indices (.nc netCDF or .zarr)"),
    plot: Optional[Path] = typer.Option(None, help="write a PNG (tornado, Sobol bars or indices over time)"),
    trial: bool = typer.Option(False, "--trial", help="SPEC is a trial design (impower150, ... or a path): each "
                                                      "run is a whole trial, outputs are endpoints such as "
                                                      "'pfs@12:ABCP', 'os_median:BCP', 'orr:ABCP', "
                                                      "'hr_os:ABCP_vs_BCP'"),
    patients: Optional[int] = typer.Option(None, min=1, help="with --trial: patients per arm (default: the design's)"),
    calibration: Optional[Path] = typer.Option(None, help="with --trial: a calibration folder (fitting/<problem>)"),
) -> None:
    """Local, Morris or Sobol sensitivity of model outputs (or, with --trial, trial endpoints) to parameters."""
    from .sensitivity import command

    if backend == "numba":
        _solver_in_background("batch")
    try:
        _check_targets([out], [plot])
        if trial and (days is not None or regimen is not None):
            raise typer.BadParameter("--days and --regimen do not apply with --trial: a trial runs its design's "
                                     "arms, schedules and follow-up")
        if trial and (rtol is not None or atol is not None):
            raise typer.BadParameter("--rtol and --atol do not apply with --trial: a trial solves with its "
                                     "design's tolerances ('solver: {rtol, atol}' in the design file)")
        if trial:
            settings = _calibration(calibration) if calibration is not None else {}
            ds = command.run_trial(spec, method, output, param, n, backend, seed, scale, patients, on_failure,
                                   settings)
        elif patients is not None or calibration is not None:
            raise typer.BadParameter("--patients and --calibration apply to trial designs: add --trial")
        else:
            ds = command.run(spec, method, output, param, n, backend, seed, scale, days, regimen,
                             1e-6 if rtol is None else rtol, 1e-9 if atol is None else atol,
                             on_failure)
    except (ImmunoeditError, typer.BadParameter) as exc:
        _fail(exc)
    command.summary(ds, console)
    from .sensitivity.plots import plot_sensitivity

    _write(ds, out, plot, plot_sensitivity)


@app.command("fit")
def fit_command(
    problem: Path = typer.Argument(..., help="a fitting problem folder (fitting/<problem>) or its problem.yaml"),
    out: Path = typer.Option(..., help="output folder: checkpoints, fit.nc, calibration.yaml, report.md + PNGs"),
    resume: bool = typer.Option(False, help="continue the checkpointed fit in --out (nothing done is redone)"),
) -> None:
    """Fit a calibration problem (time courses, or trial endpoints); checkpointed and resumable."""
    from .fit import command

    try:
        command.run(problem, out, resume, console)
    except ImmunoeditError as exc:
        _fail(exc)


@app.command("cite")
def cite_command(
    spec: str = typer.Argument(..., help="built-in name or path to a spec YAML file"),
    format: str = typer.Option("bibtex", "--format", "-f", help="bibtex | text"),  # noqa: A002
) -> None:
    """Print the references of a model and of every module it uses (BibTeX or text)."""
    from .citations import cite

    try:
        text = cite(spec, format=format)
    except (ImmunoeditError, ValueError) as exc:
        _fail(exc)
    typer.echo(text, nl=False)


def main() -> None:  # pragma: no cover - console entry point
    app()
