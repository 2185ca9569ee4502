"""Exportable models: every atomistic model derives from AtomisticPotential."""
from .base import AtomisticPotential
from .reference import MorsePotential

__all__ = ["AtomisticPotential", "MorsePotential"]
