"""OpenMM integration: exported models as forces (TorchForce or PythonForce) and per-atom uncertainty.

``create_force(model, topology)`` gives a Force to add to a System; ``UncertaintyReporter`` watches a
committee model's per-atom force std during a Simulation; ``MLPotential("mlpot", modelPath=...)``
works through openmm-ml's registry (see :mod:`mlpot_plugins.openmm.mlpotential`).
"""
import torch  # noqa: F401  (must precede openmmtorch)

from .force import BACKENDS, create_force
from .reporter import UncertaintyExceeded, UncertaintyReporter, UncertaintyWarning, read_uncertainty

__all__ = ["create_force", "BACKENDS", "UncertaintyReporter", "UncertaintyExceeded", "UncertaintyWarning",
           "read_uncertainty"]
