"""Shared fixtures: small structures and the shipped reference models."""
import numpy as np
import pytest
from ase.build import bulk


@pytest.fixture
def cuau_cell():
    """A 32-atom fcc CuAu cell, slightly rattled, periodic."""
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 2, 2))
    symbols = atoms.get_chemical_symbols()
    for i in range(0, len(atoms), 3):
        symbols[i] = "Au"
    atoms.set_chemical_symbols(symbols)
    atoms.rattle(0.1, rng=np.random.default_rng(1))
    return atoms


@pytest.fixture
def triclinic_cell():
    """A small triclinic Cu/Au cell (cutoff 6 A is larger than half of its heights)."""
    atoms = bulk("Cu", "fcc", a=3.7).repeat((2, 2, 2))  # primitive fcc: triclinic 60-degree cell
    atoms.symbols[[1, 4]] = "Au"
    atoms.rattle(0.1, rng=np.random.default_rng(2))
    return atoms
