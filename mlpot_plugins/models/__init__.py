"""Exportable models: every atomistic model derives from AtomisticPotential."""
from .base import AtomisticPotential
from .reference import MorsePotential

__all__ = ["AtomisticPotential", "EquivariantPotential", "MorsePotential"]


def __getattr__(name):
    if name == "EquivariantPotential":  # lazy: importing e3nn is only paid by those who use it
        from .equivariant import EquivariantPotential

        return EquivariantPotential
    raise AttributeError(name)
