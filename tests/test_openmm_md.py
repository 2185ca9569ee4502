"""NVE molecular dynamics in OpenMM with the model: energy is conserved (drift reported)."""
import numpy as np
import openmm
import pytest

from mlpot_plugins.openmm import create_force
from openmm_systems import BACKENDS, MODEL, empty_system, periodic_cubic, topology_of


def nve_drift(platform, backend="torch", steps=300, dt_fs=1.0, make_force=None):
    """(drift, fluctuation, kinetic) per atom in kJ/mol; ``make_force(model, topology)`` replaces create_force."""
    atoms = periodic_cubic()
    system = empty_system(atoms)
    system.addForce((make_force or (lambda m, t: create_force(m, t, backend=backend)))(MODEL, topology_of(atoms)))
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


@pytest.mark.parametrize("platform, backend", [(p, b) for b in BACKENDS for p in ("Reference", "CPU")])
def test_nve_energy_conservation(platform, backend):
    drift, spread, kinetic = nve_drift(platform, backend)
    print(f"\n[{platform}/{backend}] 300 x 1 fs NVE, 32 Cu/Au atoms: drift {drift * 1e3:.3f} J/mol/atom, "
          f"fluctuation {spread * 1e3:.3f} J/mol/atom, kinetic {kinetic:.3f} kJ/mol/atom")
    assert kinetic > 0.5  # atoms move (300 K is ~3.7 kJ/mol/atom of total kinetic+potential share)
    assert spread < 0.01 * kinetic and drift < 0.005 * kinetic


def test_example_script_runs(tmp_path):
    """examples/openmm_cu_md.py (what users copy) runs, reports uncertainty, and stops on the threshold."""
    import subprocess
    import sys
    from pathlib import Path

    from mlpot_plugins.openmm import read_uncertainty

    script = Path(__file__).resolve().parents[1] / "examples" / "openmm_cu_md.py"
    run = subprocess.run([sys.executable, str(script), "--steps", "20", "--report", "10", "--threshold", "50",
                          "--out", str(tmp_path / "a")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "20 steps; max per-atom force std seen" in run.stdout
    rec = read_uncertainty(tmp_path / "a" / "uncertainty.npy")
    steps, stds = rec["step"], rec["forces_std"]
    assert steps.tolist() == [10, 20] and stds[0].shape == (107,)
    run = subprocess.run([sys.executable, str(script), "--steps", "20", "--report", "10", "--threshold", "1e-6",
                          "--out", str(tmp_path / "b")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "stopped: step 10: per-atom force std exceeds the threshold" in run.stdout
