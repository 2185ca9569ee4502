"""``backend="python"``: the model behind an ``openmm.PythonForce`` (no openmm-torch needed).

The callable is evaluated by OpenMM with a State; it uses the same path as the ASE calculator
(numpy vesin neighbour list + ``LoadedModel.compute``) and converts units with :mod:`mlpot_plugins.units`.
It pickles by model path, so XmlSerializer and ``copy.deepcopy`` (used by openmm-ml's interpolation)
work; the model is reloaded on unpickling.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch

from .. import units
from ..export import LoadedModel
from ..neighbors import neighbor_list
from .model_loading import load_for_openmm


def evaluate_model(model: LoadedModel, types: torch.Tensor, positions_A: np.ndarray, cell_A: np.ndarray,
                   periodic: bool, need_uncertainty: bool = False) -> Dict[str, torch.Tensor]:
    """Contract ``compute`` on Angstrom positions (the ASE calculator's path, without an Atoms object)."""
    edge_index, shifts = neighbor_list(positions_A, cell_A, periodic, model.cutoff)
    dt, dev = model.dtype, model.device
    return model.compute(torch.as_tensor(positions_A, dtype=dt, device=dev), types,
                         torch.as_tensor(edge_index, device=dev), torch.as_tensor(shifts, dtype=dt, device=dev),
                         need_virial=False, need_uncertainty=need_uncertainty and model.has_uncertainty)


class PythonForceComputation:
    """``f(state) -> (energy kJ/mol, forces kJ/mol/nm)`` for the particles of ``openmm.PythonForce``."""

    def __init__(self, model: LoadedModel, types: np.ndarray, periodic: bool):
        self.model = model
        self.types_np = np.asarray(types, dtype=np.int64)
        self.types = torch.as_tensor(self.types_np, device=model.device)
        self.periodic = bool(periodic)

    def __call__(self, state):
        pos_A = state.getPositions(asNumpy=True)._value * units.OPENMM_LENGTH_TO_MODEL
        n = pos_A.shape[0]
        if n == 0:
            return 0.0, np.zeros((0, 3))
        if self.periodic:
            cell_A = np.asarray(state.getPeriodicBoxVectors(asNumpy=True)._value) * units.OPENMM_LENGTH_TO_MODEL
        else:
            cell_A = np.zeros((3, 3))
        out = evaluate_model(self.model, self.types, np.asarray(pos_A), cell_A, self.periodic)
        energy = float(out["energy"].detach()) * units.OPENMM_ENERGY_FROM_MODEL
        forces = out["forces"].detach().cpu().numpy().astype(np.float64) * units.OPENMM_FORCE_FROM_MODEL
        return energy, forces

    def __getstate__(self):
        return {"path": str(self.model.path), "device": str(self.model.device), "types": self.types_np,
                "periodic": self.periodic, "dtype": self.model.metadata["dtype"]}

    def __setstate__(self, st):
        self.__init__(load_for_openmm(st["path"], st["device"], st["dtype"]), st["types"], st["periodic"])
