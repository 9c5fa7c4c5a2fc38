"""Regimens, simulate and simulate_batch."""

from .batch import simulate_batch
from .core import SolverSettings, simulate
from .regimen import Dose, Regimen

__all__ = ["Dose", "Regimen", "SolverSettings", "simulate", "simulate_batch"]
