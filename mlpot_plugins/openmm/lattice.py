"""Lattice models (kind ``lattice``, e.g. ``holstein-d4``) as OpenMM forces.

Particle k is site (i, j) = divmod(k, L) of the periodic L x L lattice (row-major, k = i L + j); its z coordinate
is the site's displacement Q. The force acts along z only (x and y forces are 0; x and y are never read), so
any OpenMM integrator moves Q with the particle's mass. Units (``mlpot_plugins.units``): lattice units are read
as OpenMM's own, 1 lattice length (Q and the spacing a) = 1 nm, t = 1 kJ/mol, so a mass m is m dalton, time
1/t is 1 ps, forces are kJ/mol/nm, kT (in t) is T = kT / R kelvin, and mlpot's friction gamma (force per
velocity) is OpenMM's Langevin friction gamma / m per ps: ``openmm_settings(params)`` gives all four.

``create_force(lattice_model, lattice_topology(L))`` (both backends) evaluates the model on the whole periodic
grid (``compute_lattice``); with ``fallback=THRESHOLD`` it calls the model's exact local solver
(``compute_lattice_block_fallback`` on the grid as one block with a periodic halo), so every site whose
calibrated force std exceeds THRESHOLD gets the exact force. A direct-force model has no energy: its
potential energy reads 0.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from .. import units
from ..holstein.dynamics import PATCH_WHY, min_lattice
from ..holstein.params import check_lattice_size, periodic_block
from ..model_file import LoadedModel, torchscript_error

TOPOLOGY_HINT = "build the lattice System's topology with mlpot_plugins.openmm.lattice_topology(L)"


def lattice_topology(L: int, species: str = "Q"):
    """An ``openmm.app.Topology`` of L x L lattice sites: particles named ``species`` (the lattice model's one
    species), no element, in row-major order (particle k = site divmod(k, L))."""
    from openmm.app import Topology

    L = check_lattice_size(L, 1, even=False)
    top = Topology()
    chain = top.addChain()
    for i in range(L):
        res = top.addResidue(f"R{i}", chain)
        for _ in range(L):
            top.addAtom(species, None, res)
    return top


def lattice_positions(Q, spacing: float = 1.0) -> np.ndarray:
    """Positions [L*L, 3] in nm of the field Q [L, L]: site (i, j) at x = i a, y = j a, z = Q[i, j]."""
    Q = np.asarray(Q, dtype=np.float64)
    L = Q.shape[-1]
    i, j = np.divmod(np.arange(L * L), L)
    return np.stack([i * spacing, j * spacing, Q.reshape(-1)], 1) * units.OPENMM_LATTICE_LENGTH_NM


def lattice_field(positions_nm) -> np.ndarray:
    """The field Q [L, L] of OpenMM positions [L*L, 3] (nm): Q = z, particle k = site divmod(k, L)."""
    z = np.asarray(positions_nm, dtype=np.float64)[:, 2] / units.OPENMM_LATTICE_LENGTH_NM
    L = math.isqrt(len(z))
    return z.reshape(L, L)


def openmm_settings(p) -> Dict[str, object]:
    """The OpenMM values of a run with the Holstein parameters ``p`` (the documented unit mapping): particle
    ``mass``, ``LangevinMiddleIntegrator`` ``temperature``, ``friction`` and step ``dt``, as openmm Quantities."""
    import openmm.unit as u

    t_kj = units.OPENMM_LATTICE_ENERGY_KJ_PER_MOL
    time_ps = units.OPENMM_LATTICE_LENGTH_NM / math.sqrt(t_kj)  # 1/t in ps for a mass unit of 1 dalton
    return {"mass": p.m * u.dalton, "temperature": p.kT * t_kj / units.MOLAR_GAS_CONSTANT_KJ * u.kelvin,
            "friction": p.gamma / p.m / time_ps / u.picosecond, "dt": p.dt * time_ps * u.picosecond}


def lattice_system(L: int, p):
    """An ``openmm.System`` of L*L lattice sites of mass ``p.m`` (dalton; no forces yet, no box: x and y are never
    read). Add ``create_force(model, lattice_topology(L))`` and integrate with ``openmm_settings(p)``."""
    import openmm

    system = openmm.System()
    mass = openmm_settings(p)["mass"]
    for _ in range(check_lattice_size(L, 1, even=False) ** 2):
        system.addParticle(mass)
    return system


def lattice_size(loaded: LoadedModel, topology_or_elements, atoms=None) -> int:
    """L of the L x L lattice the particles of ``topology_or_elements`` form; ValueError naming the problem and
    the fix for an atomistic topology, a particle count that is not a square, a lattice too small for the
    model's patch (or odd), or an ML-region subset."""
    name = loaded.metadata.get("name") or loaded.path.name
    species = loaded.species[0]
    if atoms is not None:
        raise ValueError(f"atoms=[...] (an ML region) is for atomistic models; the lattice model {name} acts on "
                         "every particle of a lattice System (particle k = site k); leave atoms out")
    if hasattr(topology_or_elements, "atoms"):  # openmm.app.Topology
        labels = [(a.element.symbol if a.element is not None else None, a.name) for a in topology_or_elements.atoms()]
    elif isinstance(topology_or_elements, str) or not hasattr(topology_or_elements, "__len__"):
        raise TypeError(f"give a Topology (lattice_topology(L)) or a list of L*L labels {species!r}, not "
                        f"{type(topology_or_elements).__name__}")
    else:
        labels = [(None, e) for e in topology_or_elements]
    bad = [k for k, (element, label) in enumerate(labels) if element is not None or label != species]
    if bad:
        element, label = labels[bad[0]]
        what = f"an atom of element {element}" if element is not None else f"labelled {label!r}"
        raise ValueError(f"particle {bad[0]} is {what} ({len(bad)} such particle(s)), but {name} is a lattice "
                         f"model: its particles are lattice sites {species!r} without element; {TOPOLOGY_HINT}, "
                         "or use an atomistic model for an atomistic system")
    n = len(labels)
    L = math.isqrt(n)
    if L * L != n:
        raise ValueError(f"the lattice System has {n} particles, which is not L*L for any L (nearest: {L}x{L} = "
                         f"{L * L}, {L + 1}x{L + 1} = {(L + 1) ** 2}); a lattice model needs one particle per site "
                         f"of a square L x L lattice; {TOPOLOGY_HINT}")
    try:
        return check_lattice_size(L, min_lattice(loaded.module), why=PATCH_WHY)
    except ValueError as exc:
        raise ValueError(f"{n} particles = {L}x{L} sites: {exc}") from None


def lattice_region(loaded: LoadedModel, topology, atoms=None):
    """The reporter's view of a lattice System: every particle, in order (validated like create_force)."""
    from .ml_region import MLRegion

    n = lattice_size(loaded, topology, atoms) ** 2
    return MLRegion(types=np.zeros(n, dtype=np.int64), indices=None, n_particles=n, periodic=False)


class OpenMMLatticeWrapper(nn.Module):
    """``forward(positions_nm) -> (energy kJ/mol, forces kJ/mol/nm)`` of a lattice model for openmm-torch:
    Q = z of the L*L particles (row-major), forces along z, 0 along x and y."""

    def __init__(self, model: torch.jit.ScriptModule, L: int, dtype: torch.dtype):
        super().__init__()
        self.model = model
        self.L: int = int(L)
        self.dtype: torch.dtype = dtype
        self.length_to_model: float = 1.0 / units.OPENMM_LATTICE_LENGTH_NM
        self.energy_from_model: float = units.OPENMM_LATTICE_ENERGY_KJ_PER_MOL
        self.force_from_model: float = units.OPENMM_LATTICE_ENERGY_KJ_PER_MOL / units.OPENMM_LATTICE_LENGTH_NM

    def site_outputs(self, Q: Tensor) -> Dict[str, Tensor]:
        return self.model.compute_lattice(Q, False)

    def forward(self, positions: Tensor) -> Tuple[Tensor, Tensor]:
        n = positions.shape[0]
        if n != self.L * self.L:
            raise RuntimeError("mlpot: the lattice force was created for " + str(self.L) + "x" + str(self.L) + " = "
                               + str(self.L * self.L) + " sites but the System has " + str(n) + " particles; "
                               "create the force with the System's own lattice topology (lattice_topology(L))")
        Q = (positions.detach()[:, 2].to(self.dtype) * self.length_to_model).reshape(self.L, self.L)
        out = self.site_outputs(Q)
        forces = torch.zeros_like(positions)
        forces[:, 2] = (out["forces"].detach().reshape(-1) * self.force_from_model).to(positions.dtype)
        energy = torch.zeros((), dtype=positions.dtype, device=positions.device)
        if "energy" in out:
            energy = (out["energy"].detach() * self.energy_from_model).to(positions.dtype)
        return energy, forces


class OpenMMLatticeFallbackWrapper(OpenMMLatticeWrapper):
    """The lattice force with the model's exact local solver on every site whose std exceeds ``threshold``."""

    def __init__(self, model: torch.jit.ScriptModule, L: int, dtype: torch.dtype, threshold: float, halo: int):
        super().__init__(model, L, dtype)
        self.threshold: float = float(threshold)
        self.halo: int = int(halo)

    def site_outputs(self, Q: Tensor) -> Dict[str, Tensor]:
        return self.model.compute_lattice_block_fallback(periodic_block(Q, self.halo), self.halo, self.threshold)


def lattice_wrapper(loaded: LoadedModel, L: int, fallback: Optional[float]) -> OpenMMLatticeWrapper:
    """The scripted module both backends run (TorchForce: in OpenMM's C++ loop; PythonForce: from Python)."""
    if fallback is None:
        wrapper = OpenMMLatticeWrapper(loaded.module, L, loaded.dtype)
    else:
        wrapper = OpenMMLatticeFallbackWrapper(loaded.module, L, loaded.dtype, loaded.check_fallback(fallback),
                                               int(loaded.metadata["fallback_range"]))
    return torch.jit.script(wrapper)


class LatticePythonForceComputation:
    """``f(state) -> (energy kJ/mol, forces kJ/mol/nm)`` for ``openmm.PythonForce`` (the scripted wrapper)."""

    def __init__(self, loaded: LoadedModel, L: int, fallback: Optional[float]):
        self.model, self.L, self.fallback = loaded, int(L), fallback
        self.module = lattice_wrapper(loaded, L, fallback).to(loaded.device)

    def __call__(self, state):
        pos = torch.as_tensor(np.asarray(state.getPositions(asNumpy=True)._value), device=self.model.device)
        try:
            energy, forces = self.module(pos)
        except Exception as exc:  # the model's own message first
            err = torchscript_error(exc)
            if err is exc:
                raise
            raise err from None
        return float(energy), forces.detach().cpu().numpy()

    def __getstate__(self):
        from .python_force import file_sha256

        return {"path": str(self.model.path), "sha256": file_sha256(self.model.path), "device": str(self.model.device),
                "dtype": self.model.metadata["dtype"], "L": self.L, "fallback": self.fallback}

    def __setstate__(self, st):
        # never raise here (OpenMM's PythonForce deserializer crashes on it): report at the first evaluation
        from .model_loading import load_for_openmm
        from .python_force import MODEL_DIR_ENV, find_model

        try:
            self.__init__(load_for_openmm(find_model(st["path"], st["sha256"]), st["device"], st["dtype"]),
                          st["L"], st["fallback"])
        except Exception as exc:  # noqa: BLE001
            message = (f"mlpot: this deserialized lattice force cannot load its model: {exc}. Put the model file "
                       f"back at {st['path']!r}, or set {MODEL_DIR_ENV} to a folder holding a copy of it")

            def fail(state, message=message):
                raise FileNotFoundError(message)

            self.__call__ = fail  # type: ignore[method-assign]


def create_lattice_force(loaded: LoadedModel, topology_or_elements, atoms=None, backend: str = "torch",
                         fallback: Optional[float] = None):
    """``create_force`` for a lattice model (see the module docstring)."""
    import openmm

    L = lattice_size(loaded, topology_or_elements, atoms)
    name = f"mlpot:{loaded.metadata.get('name') or loaded.path.stem} ({L}x{L} lattice)"
    if backend == "python":
        force = openmm.PythonForce(LatticePythonForceComputation(loaded, L, fallback))
    else:
        import openmmtorch

        from .torch_plugins import ensure_torch_plugins

        ensure_torch_plugins()
        force = openmmtorch.TorchForce(lattice_wrapper(loaded, L, fallback))
        force.setOutputsForces(True)
    force.setUsesPeriodicBoundaryConditions(False)  # the lattice is periodic by itself; x and y are not read
    force.setName(name)
    return force


def site_uncertainty(loaded: LoadedModel, positions_nm) -> Dict[str, np.ndarray]:
    """The uncertainty reporter's record for a lattice model: ``forces_std`` [L*L] (the calibrated per-site
    force std of ``compute_lattice``, t per Q unit = kJ/mol/nm), ``energies_std`` and ``energy_std`` NaN (the
    lattice contract has no energy std)."""
    Q = torch.as_tensor(lattice_field(positions_nm), dtype=loaded.dtype, device=loaded.device)
    std = loaded.module.compute_lattice(Q, True)["forces_std"].detach().cpu().numpy().astype(np.float64)
    std = std.reshape(-1) * units.OPENMM_LATTICE_ENERGY_KJ_PER_MOL / units.OPENMM_LATTICE_LENGTH_NM
    return {"forces_std": std, "energies_std": np.full(std.shape, np.nan), "energy_std": np.float64(np.nan)}
