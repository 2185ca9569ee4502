"""``backend="python"``: the model behind an ``openmm.PythonForce`` (no openmm-torch needed).

OpenMM calls the computation with a State holding only the ML-region particles (``setParticles``);
it runs the same translating module as the TorchForce backend (:class:`OpenMMModelWrapper`: units,
vesin-torch neighbour list, the model's ``compute``), so the two backends differ only in who calls it.
It pickles by model path, so XmlSerializer and ``copy.deepcopy`` (used by openmm-ml's
interpolation) work; the model is reloaded on unpickling.
"""
from __future__ import annotations

import numpy as np
import torch

from ..model_file import LoadedModel
from .model_loading import load_for_openmm
from .torch_module import OpenMMModelWrapper


class PythonForceComputation:
    """``f(state) -> (energy kJ/mol, forces kJ/mol/nm)`` for the particles of ``openmm.PythonForce``."""

    def __init__(self, model: LoadedModel, types: np.ndarray, periodic: bool):
        self.model = model
        self.types_np = np.asarray(types, dtype=np.int64)
        self.periodic = bool(periodic)
        wrapper = OpenMMModelWrapper(model.module, torch.as_tensor(self.types_np), None, model.cutoff,
                                     self.periodic, model.dtype)
        self.module = torch.jit.script(wrapper).to(model.device)

    def __call__(self, state):
        dev = self.model.device
        # State._getVectorAsNumpy-free path: positions in nm as a plain float64 array
        pos = torch.as_tensor(np.asarray(state.getPositions(asNumpy=True)._value), device=dev)
        if pos.shape[0] == 0:
            return 0.0, np.zeros((0, 3))
        box = None
        if self.periodic:
            box = torch.as_tensor(np.asarray(state.getPeriodicBoxVectors(asNumpy=True)._value), device=dev)
        energy, forces = self.module(pos, box)
        return float(energy), forces.detach().cpu().numpy()

    def __getstate__(self):
        return {"path": str(self.model.path), "device": str(self.model.device), "types": self.types_np,
                "periodic": self.periodic, "dtype": self.model.metadata["dtype"]}

    def __setstate__(self, st):
        self.__init__(load_for_openmm(st["path"], st["device"], st["dtype"]), st["types"], st["periodic"])
