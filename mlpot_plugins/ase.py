"""ASE calculator for exported models: ``MLPotCalculator(model=path_or_name_or_loaded)``."""
from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from .model_file import LoadedModel, load


class MLPotCalculator(Calculator):
    """Energy, per-atom energies, forces, stress and (committees) ``forces_std``/``energy_std``.

    Units are ASE's (eV, Angstrom). ``forces_std`` is the calibrated per-atom force standard deviation
    in eV/A, ``energies_std`` the per-atom energy std and ``energy_std`` the total energy std.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, model, device: str = "cpu", **kwargs):
        super().__init__(**kwargs)
        self.model = model if isinstance(model, LoadedModel) else load(model, device=device)
        if self.model.kind != "atomistic":
            raise ValueError(f"{self.model.path}: a {self.model.kind!r} model cannot drive atoms; "
                             "use an atomistic model with MLPotCalculator")
        self._index = {s: i for i, s in enumerate(self.model.species)}
        if self.model.has_uncertainty:
            self.implemented_properties = self.implemented_properties + [
                "forces_std", "energies_std", "energy_std"]

    def types_of(self, atoms) -> np.ndarray:
        missing = sorted(set(atoms.get_chemical_symbols()) - set(self._index))
        if missing:
            raise ValueError(f"element(s) {missing} not in the model's species {self.model.species}; "
                             "use a model trained for them")
        return np.array([self._index[s] for s in atoms.get_chemical_symbols()], dtype=np.int64)

    def evaluate(self, atoms, need_uncertainty: bool = True):
        """Run the contract method on ``atoms`` and return its output dict (torch tensors)."""
        return self.model.compute_on(atoms.positions, atoms.cell.array, atoms.pbc, self.types_of(atoms),
                                     need_virial=True, need_uncertainty=need_uncertainty)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        out = {k: v.detach().cpu().numpy().astype(np.float64) for k, v in self.evaluate(self.atoms).items()}
        energy = float(out["energy"])
        self.results = {"energy": energy, "free_energy": energy, "energies": out["energies"],
                        "forces": out["forces"]}
        if self.atoms.cell.rank == 3 and self.atoms.pbc.any():
            stress = -out["virial"] / self.atoms.get_volume()
            self.results["stress"] = stress.flat[[0, 4, 8, 5, 2, 1]]
        elif "stress" in properties:
            raise ValueError("stress needs a 3D cell with periodic boundaries")
        for key in ("forces_std", "energies_std"):
            if key in out:
                self.results[key] = out[key]
        if "energy_std" in out:
            self.results["energy_std"] = float(out["energy_std"])
