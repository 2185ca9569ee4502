"""Crystals at a model's own zero-pressure lattice constant, for examples and demos.

A lattice constant taken from experiment is not the model's: the shipped Morse committee at Cu's 3.61 A
sits under ~16 GPa, where every atom is far from where the model was made for. ``equilibrium_lattice``
minimises the model's energy per atom of the perfect cubic cell instead.
"""
from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=None)
def equilibrium_lattice(model: str, symbol: str = "Cu", structure: str = "fcc", guess: float = 3.6,
                        span: float = 0.12) -> float:
    """The cubic lattice constant (A) minimising ``model``'s energy per atom of a perfect ``structure``
    crystal of ``symbol``, searched within ``guess`` * (1 -/+ ``span``); raises if the minimum is at an
    end of that range (no equilibrium there)."""
    from ase.build import bulk
    from scipy.optimize import minimize_scalar

    from .ase import MLPotCalculator

    calc = MLPotCalculator(model)

    def energy_per_atom(a: float) -> float:
        atoms = bulk(symbol, structure, a=a, cubic=True)
        atoms.calc = calc
        return atoms.get_potential_energy() / len(atoms)

    lo, hi = guess * (1 - span), guess * (1 + span)
    res = minimize_scalar(energy_per_atom, bounds=(lo, hi), method="bounded", options={"xatol": 1e-5})
    if not lo + 1e-3 < res.x < hi - 1e-3:
        raise ValueError(f"{model}: no energy minimum of {structure} {symbol} between {lo:.3f} and {hi:.3f} A "
                         f"(the search ended at {res.x:.3f} A); pass a better guess")
    return float(res.x)


def openmm_crystal(atoms):
    """An ASE crystal as an OpenMM ``(Topology, System)``: one residue per atom, element masses, the
    periodic box (nm); the System has no forces yet (add ``create_force(model, topology)``)."""
    import openmm
    import openmm.app as app

    from .units import NM_PER_ANGSTROM

    top = app.Topology()
    chain = top.addChain()
    for symbol in atoms.get_chemical_symbols():
        top.addAtom(symbol, app.Element.getBySymbol(symbol), top.addResidue(symbol, chain))
    box = [openmm.Vec3(*v) for v in atoms.cell.array * NM_PER_ANGSTROM]
    top.setPeriodicBoxVectors(box)
    system = openmm.System()
    for atom in top.atoms():
        system.addParticle(atom.element.mass)
    system.setDefaultPeriodicBoxVectors(*box)
    return top, system
