"""Parameter ranges and sampling designs (SALib), and running a design through `simulate_batch`.

A parameter is sampled uniformly over [low, high], on a log scale when `scale == "log"` (then
the design coordinate is ln p). Ranges come from explicit values, else the spec's `bounds`,
else its `prior`; see `parameter_ranges` for the rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from ..compile import CompiledModel
from ..errors import SimulationError
from ..simulate import simulate_batch
from ..simulate.core import require_compiled
from ..spec.expressions import suggest
from .outputs import Output, output_grid

#: Normal quantile of the central 95 % interval, for ranges read from normal / lognormal priors.
Z95 = 1.959963984540054
#: Ranges whose high/low ratio reaches this are sampled on a log scale when `log="auto"`.
LOG_RATIO = 10.0

Scale = Literal["linear", "log"]
#: `log` as read by `log_choice`: 'auto', one scale for all, or the names sampled on a log scale.
LogChoice = bool | Literal["auto"] | frozenset[str]
#: The words `log` accepts, as the CLI's --scale.
LOG_WORDS: dict[str, bool | Literal["auto"]] = {"auto": "auto", "linear": False, "log": True}


@dataclass(frozen=True)
class ParameterRange:
    """A parameter sampled uniformly over [low, high] (in ln p when scale is 'log').

    source: where the range came from ('explicit', 'bounds', 'prior uniform', ...).
    """

    name: str
    low: float
    high: float
    scale: Scale = "linear"
    source: str = "explicit"

    @property
    def design_bounds(self) -> tuple[float, float]:
        """Bounds in design coordinates: (ln low, ln high) on a log scale."""
        if self.scale == "log":
            return math.log(self.low), math.log(self.high)
        return self.low, self.high

    def to_values(self, x: np.ndarray) -> np.ndarray:
        """Parameter values from design coordinates."""
        return np.exp(x) if self.scale == "log" else np.asarray(x, dtype=float)


#: One item of a `params` argument, read (`range_items`).
RangeItem = str | ParameterRange | tuple[str, float, float]


def _spec_range(model: CompiledModel, name: str) -> tuple[float, float, str, bool]:
    """(low, high, source, log-natural) from the spec's bounds, else its prior."""
    spec = model.spec.parameters[name]
    if spec.bounds is not None:
        return float(spec.bounds[0]), float(spec.bounds[1]), "bounds", False
    prior = spec.prior
    if prior is None:
        raise SimulationError(f"parameter '{name}' of model '{model.name}' has neither bounds nor a prior "
                              f"({spec.loc}): give its range explicitly, e.g. {name}:LOW:HIGH")
    kind = prior["distribution"]
    if kind in ("uniform", "loguniform"):
        return float(prior["low"]), float(prior["high"]), f"prior {kind}", kind == "loguniform"
    if kind == "lognormal":
        median, sigma = float(prior["median"]), float(prior["sigma"])
        return (median * math.exp(-Z95 * sigma), median * math.exp(Z95 * sigma),
                "prior lognormal, central 95 %", True)
    mean, sd = float(prior["mean"]), float(prior["sd"])
    return mean - Z95 * sd, mean + Z95 * sd, "prior normal, central 95 %", False


def log_choice(log: Any) -> LogChoice:
    """`log` read: 'auto', True / False for every parameter (also the words 'log' / 'linear' of
    the CLI's --scale), or the set of names to sample on a log scale."""
    if isinstance(log, (bool, np.bool_)):
        return bool(log)
    if isinstance(log, str) and log in LOG_WORDS:
        return LOG_WORDS[log]
    if isinstance(log, Iterable) and not isinstance(log, (str, Mapping)):
        names = list(log)
        if all(isinstance(name, str) for name in names):
            return frozenset(names)
    raise SimulationError(f"log must be 'auto', 'linear', 'log', True / False or a list of parameter names, "
                          f"got {log!r}")


def _scale(name: str, low: float, high: float, log_natural: bool, log: LogChoice) -> Scale:
    if log == "auto":
        use = log_natural or (low > 0 and high / low >= LOG_RATIO)
    elif isinstance(log, bool):
        use = log
    else:
        use = name in log
    return "log" if use else "linear"


def check_log_names(log: LogChoice, ranges: Sequence[ParameterRange]) -> tuple[ParameterRange, ...]:
    """`ranges`, after checking that every name `log` lists is one of theirs."""
    unknown = sorted(log - {r.name for r in ranges}) if isinstance(log, frozenset) else []
    if unknown:
        raise SimulationError(f"log names {', '.join(unknown)}, not among the parameters analysed "
                              f"({', '.join(r.name for r in ranges)})")
    return tuple(ranges)


def check_parameter(model: CompiledModel, name: str) -> None:
    """Raise SimulationError (with a suggestion) unless `name` is a parameter of `model`."""
    if name not in model.parameters:
        hint = suggest(name, model.parameters)
        raise SimulationError(f"'{name}' is not a parameter of model '{model.name}'"
                              + (f" ({hint})" if hint else f"; parameters: {', '.join(model.parameters)}"))


def _checked_range(r: ParameterRange, model: CompiledModel) -> ParameterRange:
    check_parameter(model, r.name)
    if not (math.isfinite(r.low) and math.isfinite(r.high) and r.low < r.high):
        raise SimulationError(f"parameter '{r.name}': the range needs finite low < high, got "
                              f"[{r.low:g}, {r.high:g}] ({r.source})")
    if r.scale == "log" and r.low <= 0:
        raise SimulationError(f"parameter '{r.name}': a log-scale range needs low > 0, got "
                              f"[{r.low:g}, {r.high:g}] ({r.source}); sample it linearly (log=False) or "
                              "give a positive range")
    if r.scale not in ("linear", "log"):
        raise SimulationError(f"parameter '{r.name}': scale must be 'linear' or 'log', got {r.scale!r}")
    return r


def parameter_ranges(model: CompiledModel, params: Iterable[Any] | Mapping[str, Any] | None = None,
                     log: Any = "auto") -> tuple[ParameterRange, ...]:
    """The ranges to sample.

    params: None (every parameter whose spec has bounds or a prior); names (ranges from the spec);
    `ParameterRange`s or (name, low, high) tuples (explicit); or a mapping name -> (low, high) or
    None (from the spec). Spec ranges: `bounds` first; else the prior's support (uniform,
    loguniform) or its central 95 % interval (normal: mean +- 1.96 sd; lognormal:
    median * exp(+-1.96 sigma)). log: 'auto' samples on a log scale parameters with a
    loguniform/lognormal prior or with low > 0 and high/low >= 10; True / False (or 'log' /
    'linear') for all; or the names to sample on a log scale.
    """
    choice = log_choice(log)
    if params is None:
        names = [n for n, p in model.spec.parameters.items() if p.bounds is not None or p.prior is not None]
        if not names:
            raise SimulationError(f"no parameter of model '{model.name}' has bounds or a prior: name the "
                                  "parameters and their ranges (NAME:LOW:HIGH)")
        items: list[RangeItem] = list(names)
    else:
        items = range_items(params)
    return check_log_names(choice, [model_range(model, item, choice) for item in items])


def model_range(model: CompiledModel, item: RangeItem, log: LogChoice) -> ParameterRange:
    """The checked range of one item of `range_items`: as given, explicit, or from the spec."""
    if isinstance(item, ParameterRange):
        return _checked_range(item, model)
    if isinstance(item, str):
        check_parameter(model, item)
        low, high, source, natural = _spec_range(model, item)
        return _checked_range(ParameterRange(item, low, high, _scale(item, low, high, natural, log), source), model)
    name, low, high = item
    return _checked_range(ParameterRange(name, low, high, _scale(name, low, high, False, log), "explicit"), model)


def range_items(params: Any) -> list[RangeItem]:
    """The items of a `params` argument (names, (name, low, high) tuples or `ParameterRange`s;
    a mapping name -> (low, high) or None), each read and every parameter named once."""
    if isinstance(params, Mapping):
        raw = [_mapping_item(name, value) for name, value in params.items()]
    elif isinstance(params, (str, ParameterRange)):
        raw = [params]
    elif isinstance(params, Iterable):
        raw = list(params)
    else:
        raise SimulationError(f"params must be parameter names, (name, low, high) tuples or ParameterRanges, or a "
                              f"mapping name -> (low, high) or None; got {type(params).__name__}")
    items = [_range_item(item) for item in raw]
    if not items:
        raise SimulationError("params is empty: name at least one parameter (NAME, or (NAME, LOW, HIGH))")
    names = [item if isinstance(item, str) else item.name if isinstance(item, ParameterRange) else item[0]
             for item in items]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SimulationError(f"parameters named more than once: {', '.join(repeated)} (give each one range)")
    return items


def _mapping_item(name: Any, value: Any) -> Any:
    """One entry of a `params` mapping as an item: the name (value None) or (name, low, high)."""
    if value is None:
        return name
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise SimulationError(f"params[{name!r}] must be None (the spec's range) or (low, high), got {value!r}")
    return (name, *value)


def _range_item(item: Any) -> RangeItem:
    """One parameter item read: a name, a ParameterRange, or (name, low, high) with numbers."""
    if isinstance(item, (str, ParameterRange)):
        return item
    try:
        name, low, high = item
        if isinstance(name, str):
            return name, float(low), float(high)
    except (TypeError, ValueError):
        pass
    raise SimulationError(f"cannot read parameter range {item!r}: give a name, (name, low, high) or a "
                          "ParameterRange (one range alone goes in a list: [(name, low, high)])")


def salib_problem(ranges: Iterable[ParameterRange]) -> dict[str, Any]:
    """SALib's problem dict: names and bounds in design coordinates (ln p on a log scale)."""
    ranges = list(ranges)
    return {"num_vars": len(ranges), "names": [r.name for r in ranges],
            "bounds": [list(r.design_bounds) for r in ranges]}


@dataclass(frozen=True, eq=False)
class Design:
    """A sampling design: runs x parameters in design coordinates (ln p for log-scale ones).

    Runs come in blocks that estimators use together: a Sobol base sample (A, the k mixed rows
    AB_j, [BA_j,] B: k + 2 or 2k + 2 runs) or a Morris trajectory (k + 1 runs).
    """

    method: str
    ranges: tuple[ParameterRange, ...]
    X: np.ndarray
    n: int
    seed: int
    block: int
    second_order: bool = False
    num_levels: int = 4

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.ranges]

    @property
    def problem(self) -> dict[str, Any]:
        """The SALib problem (bounds in design coordinates)."""
        return salib_problem(self.ranges)

    @property
    def values(self) -> np.ndarray:
        """Parameter values (n_runs, k)."""
        return np.column_stack([r.to_values(self.X[:, j]) for j, r in enumerate(self.ranges)])

    @property
    def table(self) -> pd.DataFrame:
        """Parameter values as the `params` table of `simulate_batch`, one row per run."""
        return pd.DataFrame(self.values, columns=self.names)

    @property
    def n_runs(self) -> int:
        return self.X.shape[0]

    def block_of(self) -> np.ndarray:
        """Block index of each run (n_runs,)."""
        return np.arange(self.n_runs) // self.block


def _is_integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_seed(seed: Any) -> None:
    """Same seed, same design: an integer >= 0 (None would draw a new design every time)."""
    if not _is_integer(seed) or seed < 0:
        raise SimulationError(f"seed must be an integer >= 0 (same seed, same result), got {seed!r}")


def sobol_design(ranges: Iterable[ParameterRange], n: int, seed: int = 0,
                 second_order: bool = False) -> Design:
    """Saltelli design from a scrambled Sobol' sequence (SALib.sample.sobol): n (a power of two)
    base samples, n (k + 2) runs, or n (2k + 2) with second-order indices."""
    from SALib.sample import sobol as sobol_sample

    ranges = tuple(ranges)
    _check_seed(seed)
    if not _is_integer(n):
        raise SimulationError(f"Sobol base sample size n must be an integer (a power of two >= 2), got {n!r}")
    if n < 2 or n & (n - 1):
        low = 1 << max(1, int(n).bit_length() - 1)
        raise SimulationError(f"Sobol base sample size n must be a power of two >= 2 (the Sobol' sequence's "
                              f"balance needs it), got {n}: use {low} or {2 * low}")
    k = len(ranges)
    X = sobol_sample.sample(salib_problem(ranges), n, calc_second_order=second_order, scramble=True, seed=seed)
    return Design("sobol", ranges, X, n, seed, 2 * k + 2 if second_order else k + 2, second_order)


def morris_design(ranges: Iterable[ParameterRange], n: int, seed: int = 0, num_levels: int = 4) -> Design:
    """Morris one-at-a-time trajectories on a `num_levels` grid (SALib.sample.morris):
    n trajectories, n (k + 1) runs."""
    from SALib.sample import morris as morris_sample

    ranges = tuple(ranges)
    _check_seed(seed)
    if not _is_integer(n) or n < 2:
        raise SimulationError(f"Morris needs an integer n >= 2 of trajectories, got n={n!r} (10-50 is usual)")
    if not _is_integer(num_levels) or num_levels < 2 or num_levels % 2:
        raise SimulationError(f"Morris num_levels must be an even integer >= 2, got {num_levels!r} (4 is usual)")
    k = len(ranges)
    X = morris_sample.sample(salib_problem(ranges), n, num_levels=num_levels, seed=seed)
    return Design("morris", ranges, X, n, seed, k + 1, num_levels=num_levels)


def run_design(model: CompiledModel, design: Design, outputs: Iterable[Output] = (), times: Any = None, *,
               regimen: Any = None, fixed: Mapping[str, float] | None = None,
               initial: Mapping[str, float] | None = None, rtol: float = 1e-6, atol: float = 1e-9,
               method: str | None = None, max_steps: int = 100_000, chunk_size: int | None = None,
               progress: bool = False) -> xr.Dataset:
    """Simulate every run of `design` with `simulate_batch` (the model's backend).

    times: output days (default: see `output_grid`), extended by the times `outputs` need.
    fixed: values of parameters held constant (others keep the spec's values); initial: initial
    states for every run. Returns the batch Dataset over (sample, time), one sample per run,
    with per-run `status` (failed runs are kept, never dropped).
    """
    model = require_compiled(model, "run_design")
    table = design.table
    for name, value in (fixed or {}).items():
        if name in table:
            raise SimulationError(f"parameter '{name}' is both varied by the design and fixed at {value:g}")
        table[name] = float(value)
    grid = output_grid(list(outputs), times)
    start = pd.DataFrame({k: np.full(len(table), float(v)) for k, v in initial.items()}) if initial else None
    return simulate_batch(model, params=table, times=grid, initial=start, regimen=regimen, rtol=rtol, atol=atol,
                          method=method, max_steps=max_steps, chunk_size=chunk_size, progress=progress)
