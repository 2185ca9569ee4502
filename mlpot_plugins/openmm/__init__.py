"""OpenMM integration: exported models as forces (native plugin, TorchForce or PythonForce) and per-atom uncertainty.

``create_force(model, topology)`` gives a Force to add to a System; ``UncertaintyReporter`` watches a
committee model's per-atom force std during a Simulation; ``MLPotential("mlpot", modelPath=...)``
works through openmm-ml's registry (see :mod:`mlpot_plugins.openmm.mlpotential`).
"""
import torch  # noqa: F401  (must precede openmmtorch)

from .backends import BACKENDS, available_backends, backend_available
from .force import create_force
from .reporter import UncertaintyExceeded, UncertaintyReporter, UncertaintyWarning, read_uncertainty

__all__ = ["create_force", "BACKENDS", "available_backends", "backend_available", "UncertaintyReporter", "UncertaintyExceeded", "UncertaintyWarning",
           "read_uncertainty"]
