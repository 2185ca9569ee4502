"""ASE calculator for exported models: ``MLPotCalculator(model=path_or_name_or_loaded)``."""
from __future__ import annotations

from typing import Optional

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from .engine_setup import engine_setup
from .model_file import LoadedModel, load, resolve_dtype

UNCERTAINTY_PROPERTIES = ("forces_std", "energies_std", "energy_std")  # the contract's names
VIRIAL_PROPERTIES = ("stress", "stresses")


class MLPotCalculator(Calculator):
    """Energy, per-atom energies, forces, stress, per-atom ``stresses`` and (committees) uncertainty.

    Units are ASE's (eV, Angstrom). ``forces_std`` is the calibrated per-atom force standard deviation
    in eV/A, ``energies_std`` the per-atom energy std and ``energy_std`` the total energy std (the
    contract's output names). Each call asks the model only for what was requested: the virial only for
    ``stress``/``stresses``, the committee spread only for the uncertainty properties, so a shallow
    ensemble runs one copy for energy and forces. ``stresses`` (per atom, Voigt, eV/A^3) sum to
    ``stress``. Models without a virial output give energy and forces on periodic cells, and
    ``stress`` raises ``PropertyNotImplementedError``.
    """

    def __init__(self, model, device: str = "cpu", dtype=None, threads: Optional[int] = None, **kwargs):
        """``dtype``: "float32"/"float64" to run the model in (None: the file's own; a LoadedModel is
        used as it is). ``threads``: torch intra-op threads (engine_setup)."""
        super().__init__(**kwargs)
        engine_setup(threads)
        if isinstance(model, LoadedModel):
            if dtype is not None and resolve_dtype(dtype) != model.dtype:
                model = load(model.path, device=str(model.device), dtype=dtype)
            self.model = model
        else:
            self.model = load(model, device=device, dtype=dtype)
        if self.model.kind != "atomistic":
            raise ValueError(f"{self.model.path}: a {self.model.kind!r} model cannot drive atoms; "
                             "use an atomistic model with MLPotCalculator")
        props = ["energy", "free_energy", "energies", "forces"]
        outputs = self.model.metadata["outputs"]
        props += [p for p, o in zip(VIRIAL_PROPERTIES, ("virial", "atom_virial")) if o in outputs]
        if self.model.has_uncertainty:
            props += list(UNCERTAINTY_PROPERTIES)
        self.implemented_properties = props

    def types_of(self, atoms) -> np.ndarray:
        return self.model.types_of(atoms.get_chemical_symbols())

    def evaluate(self, atoms, need_uncertainty: bool = True, need_virial: bool = True):
        """Run the contract method on ``atoms`` and return its output dict (torch tensors)."""
        return self.model.compute_on(atoms.positions, atoms.cell.array, atoms.pbc, self.types_of(atoms),
                                     need_virial=need_virial, need_uncertainty=need_uncertainty)

    def _unavailable(self, unknown) -> PropertyNotImplementedError:
        why = ("the model has no virial output" if set(unknown) & set(VIRIAL_PROPERTIES)
               else "it is not a committee (ensemble_size 1); use a committee model (mlpot committee combines "
                    "separate models)" if set(unknown) & set(UNCERTAINTY_PROPERTIES)
               else "it is not an mlpot output")
        return PropertyNotImplementedError(f"{unknown} not available from {self.model.path.name}: {why}")

    def get_property(self, name, atoms=None, allow_calculation=True):
        if name not in self.implemented_properties:  # ASE's own message would not say why
            raise self._unavailable([name])
        return super().get_property(name, atoms, allow_calculation)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        unknown = [p for p in properties if p not in self.implemented_properties]
        if unknown:
            raise self._unavailable(unknown)
        need_virial = any(p in VIRIAL_PROPERTIES for p in properties)
        periodic_3d = self.atoms.cell.rank == 3 and self.atoms.pbc.any()
        if need_virial and not periodic_3d:
            raise PropertyNotImplementedError("stress needs a 3D cell with periodic boundaries")
        need_unc = any(p in UNCERTAINTY_PROPERTIES for p in properties)
        out = {k: v.detach().cpu().numpy().astype(np.float64)
               for k, v in self.evaluate(self.atoms, need_unc, need_virial).items()}
        energy = float(out["energy"])
        # keep earlier results of the same configuration (ASE resets them when the atoms change)
        self.results.update(energy=energy, free_energy=energy, energies=out["energies"], forces=out["forces"])
        if need_virial:
            volume = self.atoms.get_volume()
            self.results["stress"] = full_3x3_to_voigt_6_stress(-out["virial"] / volume)
            if "atom_virial" in out:
                self.results["stresses"] = full_3x3_to_voigt_6_stress(-out["atom_virial"] / volume)
        if need_unc:
            self.results.update(forces_std=out["forces_std"], energies_std=out["energies_std"],
                                energy_std=float(out["energy_std"]))
