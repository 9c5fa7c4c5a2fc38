"""Atomic checkpoints: a fit's state is pickled after every iteration, so a killed fit resumes
with nothing lost. A write goes to a temporary file in the same folder and is moved over the old
checkpoint with os.replace (atomic on POSIX and Windows), so a kill mid-write leaves the previous
checkpoint intact."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

from ..errors import FitError


def save_state(path: str | Path, state: Any) -> None:
    """Pickle `state` to `path` atomically (temporary file + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_state(path: str | Path, expect: dict[str, Any]) -> Any | None:
    """The checkpoint at `path` (None if there is none); FitError if it was written for other
    settings (`expect`: keys that must match, e.g. the problem hash, method and seed)."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, "rb") as f:
        state = pickle.load(f)  # our own file, written by save_state
    mismatch = {k: (state.get("settings", {}).get(k), v) for k, v in expect.items()
                if state.get("settings", {}).get(k) != v}
    if mismatch:
        details = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in mismatch.items())
        raise FitError(f"the checkpoint {path} was written by a different fit ({details}); resume with the "
                       "same problem and settings, or choose a new output folder")
    return state
