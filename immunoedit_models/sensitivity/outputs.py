"""What a sensitivity analysis measures: `Output` objects, parsed from text or given as functions.

Text forms (X is a state, expression or observable; times in the model's time unit, days):

    "X"                 time-resolved: X at every simulated output time
    "X@365"             X at day 365
    "auc(X)"            area under X over all output times (trapezoidal rule on the output grid)
    "auc(X, 0, 365)"    ... over days 0-365 (both ends are added to the output grid)
    "max(X)", "min(X)"  largest / smallest X over all output times, or "max(X, a, b)" over [a, b]

Anything else (a virtual-trial endpoint such as a 12-month PFS rate) is an
`Output(name, function)` whose function maps the batch Dataset to one value per sample.
Built-in outputs also evaluate on a single trajectory with any array namespace (numpy or
jax.numpy), which is what local sensitivities differentiate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import xarray as xr

from ..errors import SimulationError
from ..spec.expressions import suggest

#: Horizon of the default output grid when no output names a time (days).
DEFAULT_HORIZON = 365.0
#: Longest daily output grid built for the analyses (days, about 274 years).
MAX_DAILY_DAYS = 100_000

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_NAME_RE = re.compile(r"^\s*([A-Za-z_]\w*)\s*$")
_AT_RE = re.compile(rf"^\s*([A-Za-z_]\w*)\s*@\s*({_NUMBER})\s*$")
_WINDOW_RE = re.compile(rf"^\s*(auc|max|min)\s*\(\s*([A-Za-z_]\w*)\s*(?:,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*)?\)\s*$")
FORMS = "'X' (time-resolved), 'X@365', 'auc(X)', 'auc(X, 0, 365)', 'max(X)', 'min(X, 0, 90)'"

Reduction = Callable[[Any, np.ndarray, Any], Any]


@dataclass(frozen=True)
class Output:
    """One quantity to analyse.

    name: label in results. function: batch Dataset (sample, time) -> array (sample,), or
    (sample, time) when `time_resolved`; set for user-defined outputs. variable / reduce /
    times: set by `parse_output` for built-in forms (reduce(values (..., n_time), times, xp)
    -> (...,); None for a time-resolved variable; `times` are the days the grid must contain).
    """

    name: str
    function: Callable[[xr.Dataset], Any] | None = None
    time_resolved: bool = False
    variable: str | None = None
    reduce: Reduction | None = None
    times: tuple[float, ...] = ()

    @property
    def differentiable(self) -> bool:
        """True for built-in forms, which local sensitivities can differentiate with JAX."""
        return self.variable is not None

    def evaluate(self, batch: xr.Dataset) -> np.ndarray:
        """Values over the batch: (sample,) or (sample, time) when time-resolved."""
        if self.function is not None:
            return _checked(self.name, self.function(batch), batch, self.time_resolved)
        if self.variable not in batch:
            known = [v for v in batch.data_vars if batch[v].dims[-1:] == ("time",)]
            hint = suggest(self.variable, known)
            raise SimulationError(f"output '{self.name}': the batch has no variable '{self.variable}'"
                                  + (f" ({hint})" if hint else f"; variables over time: {', '.join(known)}"))
        values = batch[self.variable].transpose(..., "time").values
        return self.on_trajectory(values, batch["time"].values, np)

    def on_trajectory(self, values: Any, times: np.ndarray, xp: Any = np) -> Any:
        """This output from `values` (..., n_time) of its variable at `times` (numpy or jax.numpy)."""
        if self.variable is None:
            raise SimulationError(f"output '{self.name}' is a user function of the batch Dataset; "
                                  "only built-in forms (" + FORMS + ") evaluate on one trajectory")
        return values if self.reduce is None else self.reduce(values, np.asarray(times, dtype=float), xp)


def _checked(name: str, values: Any, batch: xr.Dataset, time_resolved: bool) -> np.ndarray:
    """A user function's result as a float array of the expected shape."""
    if isinstance(values, xr.DataArray):
        values = values.transpose("sample", ...).values if "sample" in values.dims else values.values
    array = np.asarray(values, dtype=float)
    expected = (batch.sizes["sample"],) + ((batch.sizes["time"],) if time_resolved else ())
    if array.shape != expected:
        raise SimulationError(f"output '{name}': its function returned shape {array.shape}, expected "
                              f"{expected} (one value per sample{' and time' if time_resolved else ''})")
    return array


def _index(times: np.ndarray, t: float, name: str) -> int:
    i = int(np.searchsorted(times, t))
    if i == len(times) or not np.isclose(times[i], t, rtol=0.0, atol=1e-9 * max(1.0, abs(t))):
        raise SimulationError(f"output '{name}' needs time {t:g} among the simulated output times "
                              f"({times[0]:g}..{times[-1]:g}, {len(times)} points); add it to `times` "
                              "(the sensitivity functions add it themselves)")
    return i


def _at(name: str, t: float) -> Reduction:
    return lambda values, times, xp: values[..., _index(times, t, name)]


def _window(name: str, kind: str, a: float | None, b: float | None) -> Reduction:
    def reduce(values, times, xp):
        i0 = 0 if a is None else _index(times, a, name)
        i1 = len(times) - 1 if b is None else _index(times, b, name)
        segment = values[..., i0:i1 + 1]
        if kind == "auc":
            return xp.trapezoid(segment, times[i0:i1 + 1], axis=-1)
        return xp.max(segment, axis=-1) if kind == "max" else xp.min(segment, axis=-1)
    return reduce


def parse_output(text: str | Output) -> Output:
    """An `Output` from its text form (see the module docstring); an Output passes through."""
    if isinstance(text, Output):
        return text
    if not isinstance(text, str):
        raise SimulationError(f"an output must be text ({FORMS}) or an Output, got {type(text).__name__}")
    if m := _NAME_RE.match(text):
        return Output(m[1], time_resolved=True, variable=m[1])
    if m := _AT_RE.match(text):
        t = _day(text, float(m[2]))
        name = f"{m[1]}@{t:g}"
        return Output(name, variable=m[1], reduce=_at(name, t), times=(t,))
    if m := _WINDOW_RE.match(text):
        kind, variable = m[1], m[2]
        a, b = (_day(text, float(m[3])), _day(text, float(m[4]))) if m[3] is not None else (None, None)
        if a is not None and not a < b:
            raise SimulationError(f"output '{text}': the window must have start < end, got {a:g}, {b:g}")
        name = f"{kind}({variable})" if a is None else f"{kind}({variable}, {a:g}, {b:g})"
        return Output(name, variable=variable, reduce=_window(name, kind, a, b),
                      times=() if a is None else (a, b))
    raise SimulationError(f"cannot read output '{text}': write one of {FORMS} (X a state, expression or "
                          "observable), or pass Output(name, function) for any other quantity")


def _day(text: str, t: float) -> float:
    """An output's time `t`, checked: the simulation starts at day 0, so no output can be before it."""
    if t < 0:
        raise SimulationError(f"output '{text}': output times must be >= 0 (days after the simulation's start "
                              f"at day 0), got {t:g}")
    return t


def _output_items(items: Any) -> list[Any]:
    """The items of an `outputs` argument: one output (text or Output) or a list of them."""
    if isinstance(items, (str, Output)):
        return [items]
    if isinstance(items, Iterable) and not isinstance(items, Mapping):
        return list(items)
    raise SimulationError(f"outputs must be an output ({FORMS}), an Output or a list of them, "
                          f"got {type(items).__name__}")


def parse_outputs(items: Sequence[str | Output] | str | Output, model=None) -> list[Output]:
    """Parse outputs; with `model`, check their variables exist, and names are unique."""
    items = _output_items(items)
    if not items:
        raise SimulationError(f"no outputs to analyse: give at least one ({FORMS})")
    outputs = [parse_output(item) for item in items]
    names = [o.name for o in outputs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SimulationError(f"outputs must have unique names; repeated: {', '.join(duplicates)}")
    if model is not None:
        known = list(model.states) + list(model.output_names)
        for o in outputs:
            if o.variable is not None and o.variable not in known:
                hint = suggest(o.variable, known)
                raise SimulationError(f"output '{o.name}': '{o.variable}' is not a state, expression or "
                                      f"observable of model '{model.name}'"
                                      + (f" ({hint})" if hint else f"; choose from {', '.join(known)}"))
    return outputs


def split_kind(outputs: Sequence[Output]) -> bool:
    """True when all outputs are time-resolved, False when all are scalar; mixed is an error."""
    kinds = {o.time_resolved for o in outputs}
    if len(kinds) > 1:
        scalar = next(o.name for o in outputs if not o.time_resolved)
        series = next(o.name for o in outputs if o.time_resolved)
        raise SimulationError(f"outputs mix scalar ('{scalar}') and time-resolved ('{series}') quantities: "
                              "analyse them in separate calls (results have dims (output, param) or "
                              "(output, time, param)); one simulated batch can serve both through "
                              "sobol_design / run_design / sobol_indices")
    return kinds.pop()


def daily_grid(horizon: float) -> np.ndarray:
    """Days 0, 1, 2, ... up to `horizon` (>= 0), and `horizon` itself."""
    return np.union1d(np.arange(0.0, np.floor(horizon) + 1.0), [float(horizon)])


def output_grid(outputs: Sequence[Output], times: Any = None) -> np.ndarray:
    """Sorted output times (days >= 0): `times` (default `daily_grid` to the latest time any
    output names, or to DEFAULT_HORIZON) plus every time the outputs need, none of them before
    the first of `times`. As in `simulate`, integration starts at the first output time (doses
    before it apply there)."""
    needed = np.asarray([t for o in outputs for t in o.times], dtype=float)
    if not np.all(np.isfinite(needed)) or needed.min(initial=0.0) < 0:
        raise SimulationError(f"output times must be finite days >= 0 (after the simulation's start at day 0), "
                              f"got {', '.join(f'{t:g}' for t in needed)}")
    if times is None:
        horizon = needed.max() if needed.size else DEFAULT_HORIZON
        if horizon > MAX_DAILY_DAYS:
            raise SimulationError(f"an output needs day {horizon:g}: a daily output grid to it would hold more than "
                                  f"{MAX_DAILY_DAYS} days; use an earlier time, or give the output times "
                                  "explicitly (times=...; CLI: --days)")
        base = daily_grid(horizon)
    else:
        base = np.asarray(times, dtype=float).ravel()
    if base.size == 0 or not np.all(np.isfinite(base)):
        raise SimulationError("output times must be a non-empty array of finite days")
    if base.min() < 0:
        raise SimulationError(f"output times must be >= 0 (days after the simulation's start at day 0), got "
                              f"{base.min():g}")
    if needed.min(initial=np.inf) < base.min():
        raise SimulationError(f"an output needs day {needed.min():g}, before the first output time {base.min():g} "
                              f"where the simulation starts: start the output times at or before day "
                              f"{needed.min():g}")
    return np.unique(np.concatenate([base, needed]))


def evaluate_outputs(outputs: Sequence[Output], batch: xr.Dataset) -> np.ndarray:
    """Stacked values: (sample, output) for scalar outputs, (sample, output, time) for time-resolved."""
    return np.stack([o.evaluate(batch) for o in outputs], axis=1)
