"""openmm-ml registration: MLPotential("mlpot", modelPath=...) createSystem / createMixedSystem."""
import importlib
import tomllib
from pathlib import Path

import numpy as np
import openmm
import pytest

openmmml = pytest.importorskip("openmmml")
from openmmml import MLPotential  # noqa: E402
from openmmml.mlpotential import MLPotentialImplFactory  # noqa: E402

from mlpot_plugins.openmm.mlpotential import MLPotPotentialImplFactory  # noqa: E402
from openmm_systems import (MODEL, SERIALIZABLE_BACKENDS, ase_reference, cluster, context_for, empty_system, energy_forces,  # noqa: E402
                            periodic_cubic, topology_of)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def registered():
    # installed packages register "mlpot" through the entry point; a checkout not yet
    # (re)installed with `pip install -e .` registers it by hand
    if "mlpot" not in MLPotential._implFactories:
        MLPotential.registerImplFactory("mlpot", MLPotPotentialImplFactory())


def test_entry_point_declared_in_pyproject():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    target = meta["project"]["entry-points"]["openmmml.potentials"]["mlpot"]
    module, attr = target.split(":")
    factory = getattr(importlib.import_module(module), attr)
    assert factory is MLPotPotentialImplFactory
    assert issubclass(factory, MLPotentialImplFactory)
    assert any(d.startswith("openmmml") for d in meta["project"]["dependencies"])


def mm_system(atoms):
    """A Lennard-Jones MM force field for Cu/Au (no charges), periodic when the atoms are."""
    system = empty_system(atoms)
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(nb.CutoffPeriodic if atoms.pbc.any() else nb.NoCutoff)
    nb.setCutoffDistance(0.35)
    # openmm-ml 1.8's interpolation recomputes the ML-region MM pairs without the dispersion correction
    nb.setUseDispersionCorrection(False)
    for s in atoms.get_chemical_symbols():
        nb.addParticle(0.0, 0.23 if s == "Cu" else 0.26, 0.5 if s == "Cu" else 0.7)
    system.addForce(nb)
    return system


@pytest.mark.parametrize("make", [periodic_cubic, cluster])
def test_create_system_equals_ase(make):
    atoms = make()
    system = MLPotential("mlpot", modelPath=MODEL).createSystem(topology_of(atoms))
    assert any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces())
    e, f = energy_forces(context_for(system, atoms))
    e_ref, f_ref = ase_reference(atoms)
    assert e == pytest.approx(e_ref, rel=1e-8)
    np.testing.assert_allclose(f, f_ref, atol=1e-8 * np.abs(f_ref).max())


@pytest.mark.parametrize("backend", ["auto"] + SERIALIZABLE_BACKENDS)
@pytest.mark.parametrize("make", [periodic_cubic, cluster])
def test_mixed_interpolation_endpoints(make, backend, caplog):
    atoms = make()
    top, mm = topology_of(atoms), mm_system(atoms)
    e_mm, f_mm = energy_forces(context_for(mm, atoms))
    potential = MLPotential("mlpot", modelPath=MODEL, backend=backend)
    # openmm-ml 1.8's interpolation also ignores the MM cutoff for ML-region pairs, so with a cutoff
    # (periodic case) the region is one fcc tetrahedron: all its pairs lie within the cutoff
    region = [0, 1, 2, 3] if atoms.pbc.any() else [0, 1, 4, 6, 13, 17, 25]
    mixed = potential.createMixedSystem(top, mm, region, interpolate=False)
    e_mixed, _ = energy_forces(context_for(mixed, atoms))
    with caplog.at_level("INFO", logger="mlpot_plugins.openmm"):
        ctx = context_for(potential.createMixedSystem(top, mm, region, interpolate=True), atoms)
    # interpolation clones the force through XML: auto takes the best serializable backend and says so
    chosen = SERIALIZABLE_BACKENDS[0] if backend == "auto" else backend
    assert f"mlpot OpenMM backend: {'auto: ' if backend == 'auto' else ''}{chosen}" in caplog.text
    ctx.setParameter("lambda_interpolate", 0.0)
    e0, f0 = energy_forces(ctx)
    assert e0 == pytest.approx(e_mm, rel=1e-10)
    np.testing.assert_allclose(f0, f_mm, atol=1e-9 * np.abs(f_mm).max())
    ctx.setParameter("lambda_interpolate", 1.0)
    assert energy_forces(ctx)[0] == pytest.approx(e_mixed, rel=1e-10)
    ctx.setParameter("lambda_interpolate", 0.25)
    assert energy_forces(ctx)[0] == pytest.approx(0.75 * e_mm + 0.25 * e_mixed, rel=1e-10)
    assert abs(e_mixed - e_mm) > 1.0  # the ML region really changes the energy


@pytest.mark.parametrize("make", [periodic_cubic, cluster])
def test_empty_ml_region_is_the_mm_system(make):
    atoms = make()
    e_mm, f_mm = energy_forces(context_for(mm_system(atoms), atoms))
    mixed = MLPotential("mlpot", modelPath=MODEL).createMixedSystem(topology_of(atoms), mm_system(atoms), [])
    e, f = energy_forces(context_for(mixed, atoms))
    assert e == pytest.approx(e_mm, rel=1e-12)
    np.testing.assert_allclose(f, f_mm, rtol=1e-12)


def test_mixed_energy_decomposes():
    """Mechanical embedding: E = E_MM(all) - E_MM(region alone) + E_ML(region alone)."""
    atoms = cluster()
    region = [2, 3, 9, 10, 11, 20]
    mixed = MLPotential("mlpot", modelPath=MODEL).createMixedSystem(topology_of(atoms), mm_system(atoms), region)
    e, _ = energy_forces(context_for(mixed, atoms))
    e_mm, _ = energy_forces(context_for(mm_system(atoms), atoms))
    sub = atoms[region]
    e_mm_region, _ = energy_forces(context_for(mm_system(sub), sub))
    e_ml_region, _ = ase_reference(sub)
    assert e == pytest.approx(e_mm - e_mm_region + e_ml_region, rel=1e-9)


def test_python_backend_through_openmmml():
    atoms = periodic_cubic()
    system = MLPotential("mlpot", modelPath=MODEL, backend="python").createSystem(topology_of(atoms))
    assert any(isinstance(f, openmm.PythonForce) for f in system.getForces())
    e, _ = energy_forces(context_for(system, atoms))
    assert e == pytest.approx(ase_reference(atoms)[0], rel=1e-8)


def test_errors():
    with pytest.raises(ValueError, match="needs modelPath="):
        MLPotential("mlpot")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        MLPotential("mlpot", modelPath="nope.pt")
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['cutoff'\]"):
        MLPotential("mlpot", modelPath=MODEL, cutoff=5.0)
    atoms = cluster()
    potential = MLPotential("mlpot", modelPath=MODEL)
    with pytest.raises(ValueError, match="use backend='python'"):
        potential.createMixedSystem(topology_of(atoms), mm_system(atoms), [0, 1], interpolate=True,
                                    backend="torch")


def test_entry_point_registers_on_openmmml_import(tmp_path):
    """An installed distribution carrying our entry point makes openmm-ml register "mlpot" by itself."""
    import os
    import subprocess
    import sys

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    target = meta["project"]["entry-points"]["openmmml.potentials"]["mlpot"]
    dist = tmp_path / "mlpot_entry_point_probe-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mlpot-entry-point-probe\nVersion: 0.0\n")
    (dist / "entry_points.txt").write_text(f"[openmmml.potentials]\nmlpot = {target}\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    code = ("import torch; from openmmml import MLPotential; "
            "f = MLPotential._implFactories['mlpot']; print(type(f).__module__, type(f).__name__)")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "mlpot_plugins.openmm.mlpotential MLPotPotentialImplFactory" in run.stdout


@pytest.mark.parametrize("backend", ["torch", "python"])
def test_precision_single_and_double(backend):
    """openmm-ml's precision= as its other potentials take it: 'single' runs the model in float32."""
    atoms = periodic_cubic()
    pot = MLPotential("mlpot", modelPath=MODEL)
    results = {}
    for precision in (None, "double", "single"):
        system = pot.createSystem(topology_of(atoms), precision=precision, backend=backend)
        results[precision] = energy_forces(context_for(system, atoms))
    e_ref, f_ref = ase_reference(atoms)
    assert results[None][0] == pytest.approx(e_ref, rel=1e-10)  # the model's own dtype: float64
    assert results["double"][0] == results[None][0]
    e32, f32 = results["single"]
    assert e32 == pytest.approx(e_ref, rel=1e-5) and e32 != results["double"][0]  # float32 rounding shows
    np.testing.assert_allclose(f32, f_ref, atol=2e-3 * np.abs(f_ref).max())


def test_shipped_name_and_path_give_the_same_system():
    from mlpot_plugins import pretrained_path

    atoms = cluster()
    by_name = MLPotential("mlpot", modelPath=MODEL).createSystem(topology_of(atoms))
    by_path = MLPotential("mlpot", modelPath=str(pretrained_path(MODEL))).createSystem(topology_of(atoms))
    assert energy_forces(context_for(by_name, atoms))[0] == energy_forces(context_for(by_path, atoms))[0]
