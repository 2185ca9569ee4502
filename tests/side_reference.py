"""Shared by the side-environment helpers (mace_side.py, nequip_side.py; run as scripts, so this folder is on
their sys.path): evaluate a foreign package's ASE calculator on the structures of an npz file."""
import numpy as np


def write_reference(calc, inp: str, out: str) -> None:
    """IN.npz (positions_k, numbers_k, cell_k, pbc_k) -> OUT.npz (energy_k, energies_k, forces_k, stress_k)."""
    from ase import Atoms

    data = np.load(inp)
    res = {}
    k = 0
    while f"positions_{k}" in data:
        atoms = Atoms(numbers=data[f"numbers_{k}"], positions=data[f"positions_{k}"], cell=data[f"cell_{k}"],
                      pbc=data[f"pbc_{k}"])
        atoms.calc = calc
        res[f"energy_{k}"] = atoms.get_potential_energy()
        res[f"forces_{k}"] = atoms.get_forces()
        res[f"energies_{k}"] = calc.results["energies"]
        if atoms.pbc.all():
            res[f"stress_{k}"] = atoms.get_stress()
        k += 1
    np.savez(out, **res)
