"""NVE molecular dynamics in OpenMM with the model: energy is conserved (drift reported)."""
import numpy as np
import openmm
import pytest

from mlpot_plugins.openmm import create_force
from openmm_systems import MODEL, context_for, empty_system, periodic_cubic, topology_of


def nve_drift(platform, backend="torch", steps=300, dt_fs=1.0):
    atoms = periodic_cubic()
    system = empty_system(atoms)
    system.addForce(create_force(MODEL, topology_of(atoms), backend=backend))
    integrator = openmm.VerletIntegrator(dt_fs * 1e-3)
    ctx = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
    ctx.setPositions(atoms.positions * 0.1)
    ctx.setVelocitiesToTemperature(300, 11)
    energies = []
    for _ in range(steps // 10):
        st = ctx.getState(getEnergy=True)
        energies.append((st.getPotentialEnergy() + st.getKineticEnergy())._value)
        integrator.step(10)
    e = np.array(energies) / len(atoms)  # kJ/mol per atom
    kinetic = st.getKineticEnergy()._value / len(atoms)
    return abs(e[-1] - e[0]), np.ptp(e), kinetic


@pytest.mark.parametrize("platform, backend", [("Reference", "torch"), ("CPU", "torch"), ("Reference", "python")])
def test_nve_energy_conservation(platform, backend):
    drift, spread, kinetic = nve_drift(platform, backend)
    print(f"\n[{platform}/{backend}] 300 x 1 fs NVE, 32 Cu/Au atoms: drift {drift * 1e3:.3f} J/mol/atom, "
          f"fluctuation {spread * 1e3:.3f} J/mol/atom, kinetic {kinetic:.3f} kJ/mol/atom")
    assert kinetic > 0.5  # atoms move (300 K is ~3.7 kJ/mol/atom of total kinetic+potential share)
    assert spread < 0.01 * kinetic and drift < 0.005 * kinetic
