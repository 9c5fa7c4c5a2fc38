"""Units of the model language (pint), with the units immunology models need added."""

from __future__ import annotations

from functools import lru_cache

import pint

#: Units that pint does not know and compartment models of tumour immunity use.
EXTRA_UNITS = (
    "cell = [cell] = cells",
    "fold = [] ",  # fold change over a baseline: dimensionless
    "IU = [international_unit]",  # international units of biological activity (e.g. aldesleukin)
)


@lru_cache(maxsize=1)
def registry() -> pint.UnitRegistry:
    """The shared unit registry (pint), with `EXTRA_UNITS` defined."""
    ureg = pint.UnitRegistry()
    for definition in EXTRA_UNITS:
        ureg.define(definition)
    return ureg


def parse_unit(text: str | int | float) -> pint.Unit:
    """Parse a unit string such as 'cell/day' or 'ng/mL' (raises pint errors on unknown units)."""
    text = str(text).strip()
    if text in ("", "1", "dimensionless"):
        return registry().dimensionless
    return registry().parse_units(text)


def conversion_factor(unit: pint.Unit, target: pint.Unit) -> float | None:
    """Factor f with 1 unit = f target, or None when the dimensions differ."""
    try:
        return float(registry().Quantity(1.0, unit).to(target).magnitude)
    except pint.DimensionalityError:
        return None


def same_unit(unit: pint.Unit, target: pint.Unit) -> bool:
    """True when the units are identical up to a factor of exactly one (mg/L == ug/mL)."""
    factor = conversion_factor(unit, target)
    return factor is not None and abs(factor - 1.0) < 1e-12


def is_dimensionless(unit: pint.Unit) -> bool:
    return same_unit(unit, registry().dimensionless)


def format_unit(unit: pint.Unit) -> str:
    """Unit text for messages, in pint's long form ('nanogram / milliliter')."""
    return "dimensionless" if unit == registry().dimensionless else f"{unit}"
