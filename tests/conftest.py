"""Shared fixtures: paths to the test specs and to ../shared (CI has it beside the checkout)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SPECS = HERE / "specs"
SHARED = HERE.parent.parent / "shared"


@pytest.fixture(scope="session")
def specs_dir() -> Path:
    return SPECS


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared (benchmark reference material) is not beside this checkout")
    return SHARED
