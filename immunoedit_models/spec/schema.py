"""The items of a model spec, as frozen dataclasses carrying their source location."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

#: Keys each section's items may have (anything else is reported with a suggestion).
TOP_LEVEL_KEYS = ("name", "kind", "description", "time_unit", "references", "uses", "requires",
                  "provides", "overrides", "states", "parameters", "expressions", "flows",
                  "observables", "doses", "regimens", "default_regimen")
STATE_KEYS = ("unit", "initial", "scale", "description")
SCALES = ("linear", "log")
PARAMETER_KEYS = ("value", "unit", "bounds", "prior", "source", "description")
EXPRESSION_KEYS = ("value", "unit", "description")
FLOW_KEYS = ("from", "to", "rate", "description")
OBSERVABLE_KEYS = ("value", "unit", "description")
DOSE_KEYS = ("target", "amount_unit", "conversion", "description")
REGIMEN_KEYS = ("description", "doses")
DOSE_ITEM_KEYS = ("drug", "amount", "start", "every", "count", "duration")
REQUIRE_KEYS = ("unit", "value", "description")
USE_KEYS = ("module", "bind")
OVERRIDE_KEYS = ("value", "initial", "bounds", "prior", "source")
PARAMETER_OVERRIDE_KEYS = ("value", "bounds", "prior", "source")
STATE_OVERRIDE_KEYS = ("initial",)

#: Most doses one regimen line may give (a schedule, not a simulation of years of hourly doses).
MAX_DOSE_COUNT = 100_000

#: Prior distributions for virtual populations: name -> required keys.
PRIORS: dict[str, tuple[str, ...]] = {
    "lognormal": ("median", "sigma"),  # sigma: standard deviation of log(value)
    "normal": ("mean", "sd"),
    "uniform": ("low", "high"),
    "loguniform": ("low", "high"),
}

KINDS = ("model", "module")


@dataclass(frozen=True)
class Location:
    """Where an item is written: file path and 1-based line (None if unknown)."""

    file: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file


@dataclass(frozen=True)
class StateSpec:
    """A state; scale 'log' integrates ln(state) (for quantities that fall many decades, e.g. a
    tumour cleared far below one cell), while results still report the state itself."""

    name: str
    unit: str
    initial: str | float
    description: str = ""
    loc: Location = Location("<memory>")
    scale: str = "linear"


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    value: float
    unit: str
    bounds: tuple[float, float] | None = None
    prior: Mapping[str, Any] | None = None
    source: str | None = None
    description: str = ""
    loc: Location = Location("<memory>")


@dataclass(frozen=True)
class ExpressionSpec:
    """A named derived quantity; `unit` is optional and checked when given."""

    name: str
    value: str | float
    unit: str | None = None
    description: str = ""
    loc: Location = Location("<memory>")


@dataclass(frozen=True)
class FlowSpec:
    """A flow `rate` out of the `source` states into the `target` states.

    source/target map state -> stoichiometric coefficient (a number or an expression of
    parameters, e.g. 1/V1 when the rate is an amount and the state a concentration).
    """

    name: str
    source: Mapping[str, str | float]
    target: Mapping[str, str | float]
    rate: str | float
    description: str = ""
    loc: Location = Location("<memory>")


@dataclass(frozen=True)
class ObservableSpec:
    name: str
    value: str | float
    unit: str
    description: str = ""
    loc: Location = Location("<memory>")


@dataclass(frozen=True)
class DoseSpec:
    """A drug's dose: `amount [amount_unit] * conversion` is added to state `target`."""

    drug: str
    target: str
    amount_unit: str
    conversion: str | float = 1
    description: str = ""
    loc: Location = Location("<memory>")


@dataclass(frozen=True)
class DoseItem:
    """`count` doses of `amount` every `every` time units from `start`; infusion if duration > 0.

    amount: a number in the drug's amount unit, or an expression of parameters (e.g. `Dose`,
    `dose_per_kg*weight`) evaluated per patient.
    """

    drug: str
    amount: float | str
    start: float = 0.0
    every: float | None = None
    count: int = 1
    duration: float = 0.0
    loc: Location = Location("<memory>")


@dataclass(frozen=True)
class RegimenSpec:
    name: str
    doses: tuple[DoseItem, ...]
    description: str = ""
    loc: Location = Location("<memory>")


@dataclass(frozen=True)
class RequireSpec:
    """A name a module needs from another module; `value` stands in when the module runs alone."""

    name: str
    unit: str
    value: float
    description: str = ""
    loc: Location = Location("<memory>")


@dataclass(frozen=True)
class ModelSpec:
    """A validated, composed model spec. Build it with `load_spec`; compile it with `compile_model`."""

    name: str
    kind: str
    description: str
    path: str
    time_unit: str
    states: Mapping[str, StateSpec]
    parameters: Mapping[str, ParameterSpec]
    expressions: Mapping[str, ExpressionSpec]
    flows: Mapping[str, FlowSpec]
    observables: Mapping[str, ObservableSpec]
    doses: Mapping[str, DoseSpec]
    regimens: Mapping[str, RegimenSpec]
    default_regimen: str | None
    references: tuple[Any, ...] = ()
    modules: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    source_text: str = ""
    parsed: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def summary(self) -> str:
        """One line: name, kind, sizes."""
        return (f"{self.name} ({self.kind}): {len(self.states)} states, {len(self.parameters)} "
                f"parameters, {len(self.flows)} flows, {len(self.doses)} drugs")
