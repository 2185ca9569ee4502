"""The only place with unit constants and conversions.

Models work in Angstrom and eV (atomistic kind). Engines convert at their boundary with these factors:
OpenMM uses nm and kJ/mol, LAMMPS ``metal`` uses Angstrom and eV, LAMMPS ``real`` Angstrom and kcal/mol.
The LAMMPS plugin's C++ copy of these numbers (lammps/mlpot_units.h) is checked against this file by a test.
"""
from __future__ import annotations

from typing import Dict, Tuple

ELEMENTARY_CHARGE = 1.602176634e-19  # C (exact, SI 2019)
AVOGADRO = 6.02214076e23  # 1/mol (exact, SI 2019)
KCAL_IN_KJ = 4.184  # thermochemical calorie

ANGSTROM_PER_NM = 10.0
NM_PER_ANGSTROM = 0.1
KJ_PER_MOL_PER_EV = ELEMENTARY_CHARGE * AVOGADRO / 1000.0  # 96.485332123310...
KCAL_PER_MOL_PER_EV = KJ_PER_MOL_PER_EV / KCAL_IN_KJ  # 23.060547830618...
EV_PER_KJ_PER_MOL = 1.0 / KJ_PER_MOL_PER_EV

# OpenMM <-> model (Angstrom, eV)
OPENMM_LENGTH_TO_MODEL = ANGSTROM_PER_NM  # nm -> Angstrom
OPENMM_ENERGY_FROM_MODEL = KJ_PER_MOL_PER_EV  # eV -> kJ/mol
OPENMM_FORCE_FROM_MODEL = KJ_PER_MOL_PER_EV * ANGSTROM_PER_NM  # eV/A -> kJ/mol/nm

# OpenMM <-> lattice models (length "lattice", energy "t"): lattice units are read as OpenMM's own units.
# 1 lattice length (Q and the site spacing a) = 1 nm, t = 1 kJ/mol; hence a lattice mass m = m dalton, the time
# unit 1/t = 1 ps (kJ/mol = dalton nm^2/ps^2), forces t per Q = kJ/mol/nm, and kT (in t) is the temperature
# T = kT / MOLAR_GAS_CONSTANT_KJ kelvin. mlpot's friction gamma (force per velocity) is OpenMM's Langevin
# friction coefficient gamma / m (1/ps).
OPENMM_LATTICE_LENGTH_NM = 1.0
OPENMM_LATTICE_ENERGY_KJ_PER_MOL = 1.0
BOLTZMANN_J_PER_K = 1.380649e-23  # exact, SI 2019
MOLAR_GAS_CONSTANT_KJ = BOLTZMANN_J_PER_K * AVOGADRO / 1000.0  # kJ/mol/K, 0.0083144626...

# LAMMPS unit style -> (engine length per model length, engine energy per model energy)
LAMMPS_UNITS: Dict[str, Tuple[float, float]] = {
    "metal": (1.0, 1.0),
    "real": (1.0, KCAL_PER_MOL_PER_EV),
}


def lammps_factors(style: str) -> Tuple[float, float]:
    """(length, energy) factors from model units to a LAMMPS unit style; ValueError for others."""
    try:
        return LAMMPS_UNITS[style]
    except KeyError:
        raise ValueError(f"LAMMPS units {style!r} are not supported by mlpot; use one of "
                         f"{sorted(LAMMPS_UNITS)}") from None
