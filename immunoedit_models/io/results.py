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

from ..errors import ResultError

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


#: result formats by file suffix
FORMATS = {".nc": "netCDF", ".nc4": "netCDF", ".zarr": "zarr"}


def writable_target(path: str | Path, fmt: str | None = None) -> Path:
    """path, checked before anything is computed or written there: its suffix names the format
    (`FORMATS`; fmt forces one, as for a zarr stream). A file or zarr store there is replaced;
    a directory that is not a zarr store, or a directory where a netCDF file would go, is refused,
    so nothing else a user saved is lost."""
    path = Path(path)
    fmt = fmt or FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ResultError(f"cannot tell the format of '{path}' from its suffix: name it *.nc (netCDF) "
                          "or *.zarr (a zarr store, for large batches)")
    if path.is_dir() and (fmt != "zarr" or not _replaceable_store(path)):
        raise ResultError(f"'{path}' is a directory that is not a zarr store: not overwriting it "
                          "(choose a path that does not exist yet)")
    return path


def _replaceable_store(path: Path) -> bool:
    """An empty directory, or a zarr store (v2 or v3 metadata at its root)."""
    return not any(path.iterdir()) or any((path / name).exists() for name in (".zgroup", ".zattrs", "zarr.json"))


def save(ds: xr.Dataset, path: str | Path, compress: bool = False) -> Path:
    """Write a result to netCDF (.nc) or zarr (.zarr); the format follows the suffix
    (`writable_target` says which paths are refused).

    compress: zlib (level 4, byte shuffle) for the numeric variables of a netCDF file, for results
    kept in the repository (e.g. a fit's KM curves: ~10x smaller); off by default, since it slows
    the writing of large batches."""
    if not isinstance(ds, xr.Dataset):
        hint = ": convert it with .to_dataset() first" if isinstance(ds, xr.DataArray) else ""
        raise TypeError(f"save_result takes an xarray Dataset, got {type(ds).__name__}{hint}")
    path = writable_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = _netcdf_safe(ds)
    if FORMATS[path.suffix.lower()] == "zarr":
        clean.to_zarr(path, mode="w")
    else:
        encoding = {name: {"zlib": True, "complevel": 4, "shuffle": True} for name, var in clean.variables.items()
                    if compress and var.dtype.kind in "fiub" and var.ndim}
        clean.to_netcdf(path, encoding=encoding)
    return path


def load(path: str | Path) -> xr.Dataset:
    """Open a saved result (netCDF or zarr), fully loaded into memory."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no result at '{path}'")
    try:
        opened = xr.open_zarr(path) if path.is_dir() else xr.open_dataset(path)
    except (ValueError, OSError) as exc:
        raise ResultError(f"'{path}' is not a netCDF file or zarr store that xarray can read: {exc}") from exc
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
