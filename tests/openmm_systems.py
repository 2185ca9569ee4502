"""Small test systems as (ase.Atoms, openmm Topology, openmm System) and OpenMM evaluation helpers."""
from __future__ import annotations

import numpy as np
import torch  # noqa: F401  (before openmmtorch)
import openmm
import openmm.app as app
import openmm.unit as u
from ase import Atoms
from ase.build import bulk

from mlpot_plugins import units

MODEL = "morse-cuau"
COMMITTEE = "morse-cuau-committee"


def _backends():
    from mlpot_plugins.openmm.backends import SERIALIZABLE, available_backends

    found = available_backends()
    return found, [b for b in found if b in SERIALIZABLE]


# every usable backend here (native > torch > python); each check runs on all of them
BACKENDS, SERIALIZABLE_BACKENDS = _backends()


def periodic_cubic() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))  # 7.22 A box < 2 x cutoff
    atoms.symbols[[1, 6, 13]] = "Au"
    atoms.rattle(0.08, seed=1)
    return atoms


def periodic_triclinic() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    # sheared into a triclinic cell in OpenMM's reduced form (a along x, b in the xy plane,
    # a_x >= 2|b_x|, 2|c_x|; b_y >= 2|c_y|); atoms follow the shear
    atoms.set_cell([[7.22, 0.0, 0.0], [1.5, 7.0, 0.0], [-1.2, 1.8, 7.4]], scale_atoms=True)
    atoms.symbols[[0, 10]] = "Au"
    atoms.rattle(0.08, seed=2)
    return atoms


def cluster() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    atoms.symbols[[2, 9]] = "Au"
    atoms.rattle(0.08, seed=3)
    atoms.pbc = False
    atoms.cell = np.zeros((3, 3))
    return atoms


SYSTEMS = {"periodic": periodic_cubic, "triclinic": periodic_triclinic, "cluster": cluster}


def topology_of(atoms: Atoms) -> app.Topology:
    top = app.Topology()
    chain = top.addChain()
    for s in atoms.get_chemical_symbols():
        top.addAtom(s, app.Element.getBySymbol(s), top.addResidue(s, chain))
    if atoms.pbc.any():
        top.setPeriodicBoxVectors([openmm.Vec3(*v) for v in atoms.cell.array * units.NM_PER_ANGSTROM])
    return top


def empty_system(atoms: Atoms) -> openmm.System:
    system = openmm.System()
    for m in atoms.get_masses():
        system.addParticle(m)
    if atoms.pbc.any():
        system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*v) for v in atoms.cell.array * units.NM_PER_ANGSTROM])
    return system


def context_for(system: openmm.System, atoms_or_positions_A, platform: str = "Reference") -> openmm.Context:
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    pos = getattr(atoms_or_positions_A, "positions", atoms_or_positions_A)
    ctx.setPositions(np.asarray(pos) * units.NM_PER_ANGSTROM)
    return ctx


def energy_forces(ctx: openmm.Context, groups=-1):
    """(kJ/mol, kJ/mol/nm numpy) of a Context."""
    st = ctx.getState(getEnergy=True, getForces=True, groups=groups)
    return (st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole),
            st.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer))


def ase_reference(atoms: Atoms, model: str = MODEL, dtype=None):
    """ASE calculator's energy and forces (the model run in DTYPE, default its own) converted to OpenMM units."""
    from mlpot_plugins.ase import MLPotCalculator

    atoms = atoms.copy()
    atoms.calc = MLPotCalculator(model, dtype=dtype)
    return (atoms.get_potential_energy() * units.OPENMM_ENERGY_FROM_MODEL,
            atoms.get_forces() * units.OPENMM_FORCE_FROM_MODEL)
