"""Results as labelled xarray Datasets with provenance; netCDF for small, zarr for large."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

import xarray as xr

#: Packages whose versions go into every result's attributes.
PROVENANCE_PACKAGES = ("immunoedit-models", "numpy", "scipy", "sympy", "numba", "jax", "diffrax", "xarray")

STATUS_MEANINGS = {
    0: "ok",
    1: "max_steps reached",
    2: "non-finite state",
    3: "step size too small (or solver failure)",
    4: "no steady state reached in pre-equilibration",
}
_STATUS_MEANINGS_JSON = json.dumps(STATUS_MEANINGS)


@lru_cache(maxsize=1)
def _versions_json() -> str:
    return json.dumps(package_versions())


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages in PROVENANCE_PACKAGES that are installed."""
    out = {"python": platform.python_version()}
    for name in PROVENANCE_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def provenance(model, **settings: Any) -> dict[str, Any]:
    """Attributes recorded on results: what ran, how, and with which versions."""
    attrs: dict[str, Any] = {
        "model": model.name,
        "spec_path": str(model.spec.path),
        "spec_hash": model.symbolic.spec_hash,
        "structure_hash": model.symbolic.structure_hash,
        "backend": model.backend,
        "time_unit": model.symbolic.time_unit,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions_json(),
        "status_meanings": _STATUS_MEANINGS_JSON,
    }
    for key, value in settings.items():
        if value is not None:
            attrs[key] = value if isinstance(value, (int, float, str)) else json.dumps(value)
    return attrs


def save(ds: xr.Dataset, path: str | Path, compress: bool = False) -> Path:
    """Write a result to netCDF (.nc) or zarr (.zarr); the format follows the suffix.

    compress: zlib (level 4, byte shuffle) for the numeric variables of a netCDF file, for results
    kept in the repository (e.g. a fit's KM curves: ~10x smaller); off by default, since it slows
    the writing of large batches."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = _netcdf_safe(ds)
    if path.suffix == ".zarr":
        clean.to_zarr(path, mode="w")
    else:
        encoding = {name: {"zlib": True, "complevel": 4, "shuffle": True} for name, var in clean.variables.items()
                    if compress and var.dtype.kind in "fiub" and var.ndim}
        clean.to_netcdf(path, encoding=encoding)
    return path


def load(path: str | Path) -> xr.Dataset:
    """Open a saved result (netCDF or zarr), fully loaded into memory."""
    path = Path(path)
    opened = xr.open_zarr(path) if path.suffix == ".zarr" else xr.open_dataset(path)
    with opened:
        return opened.load()


def _netcdf_safe(ds: xr.Dataset) -> xr.Dataset:
    """netCDF attributes must be numbers or strings: encode the rest as JSON."""
    out = ds.copy()
    out.attrs = {k: _attr(v) for k, v in ds.attrs.items()}
    for name in out.variables:
        out[name].attrs = {k: _attr(v) for k, v in ds[name].attrs.items()}
    return out


def _attr(value: Any) -> Any:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, Mapping):
        return json.dumps(dict(value))
    return json.dumps(value) if isinstance(value, (list, tuple, bool)) else str(value)
