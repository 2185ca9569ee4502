"""create_force: OpenMM energies/forces equal the ASE calculator's, on both backends and platforms."""
import copy

import numpy as np
import openmm
import pytest

from mlpot_plugins import units
from mlpot_plugins.openmm import create_force
from openmm_systems import (BACKENDS, MODEL, SERIALIZABLE_BACKENDS, SYSTEMS, ase_reference, cluster, context_for, empty_system,
                            energy_forces, periodic_cubic, periodic_triclinic, topology_of)


def openmm_energy_forces(atoms, backend="torch", platform="Reference", positions=None, **kw):
    system = empty_system(atoms)
    system.addForce(create_force(MODEL, topology_of(atoms), backend=backend, **kw))
    return energy_forces(context_for(system, atoms.positions if positions is None else positions, platform))


def assert_close(e, f, e_ref, f_ref, rel=1e-8):
    assert abs(e - e_ref) <= rel * abs(e_ref), (e, e_ref)
    scale = np.abs(f_ref).max()
    assert np.abs(f - f_ref).max() <= rel * scale, np.abs(f - f_ref).max() / scale


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(SYSTEMS))
def test_energy_forces_equal_ase(name, backend):
    atoms = SYSTEMS[name]()
    e, f = openmm_energy_forces(atoms, backend)
    e_ref, f_ref = ase_reference(atoms)
    assert np.abs(f_ref).max() > 10.0  # a rattled crystal: forces are not trivially zero
    assert_close(e, f, e_ref, f_ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cpu_platform_equals_ase(backend):
    atoms = periodic_triclinic()
    e, f = openmm_energy_forces(atoms, backend, platform="CPU")
    assert_close(e, f, *ase_reference(atoms))


def test_periodic_flag_follows_topology():
    assert create_force(MODEL, topology_of(periodic_cubic())).usesPeriodicBoundaryConditions()
    assert not create_force(MODEL, topology_of(cluster())).usesPeriodicBoundaryConditions()
    assert create_force(MODEL, topology_of(cluster()), backend="python").usesPeriodicBoundaryConditions() is False
    assert create_force(MODEL, ["Cu", "Au"], backend="torch").getOutputsForces()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make", [periodic_cubic, periodic_triclinic])
def test_invariant_under_wrapping(make, backend):
    """Atoms moved by whole lattice vectors (out of the box, as OpenMM does not wrap) change nothing."""
    atoms = make()
    e0, f0 = openmm_energy_forces(atoms, backend)
    rng = np.random.default_rng(5)
    shifted = atoms.positions + rng.integers(-2, 3, size=(len(atoms), 3)) @ atoms.cell.array
    assert np.abs(shifted - atoms.positions).max() > 3.0
    e1, f1 = openmm_energy_forces(atoms, backend, positions=shifted)
    assert_close(e1, f1, e0, f0, rel=1e-10)


def test_forces_are_minus_energy_gradient_in_openmm_units():
    """Central finite differences of the OpenMM energy (kJ/mol per nm) give the OpenMM forces."""
    atoms = periodic_triclinic()
    system = empty_system(atoms)
    system.addForce(create_force(MODEL, topology_of(atoms)))
    ctx = context_for(system, atoms)
    _, f = energy_forces(ctx)
    h = 1e-5  # nm
    pos = atoms.positions * units.NM_PER_ANGSTROM
    for i, k in [(0, 0), (7, 1), (20, 2)]:
        e = []
        for sign in (1, -1):
            p = pos.copy()
            p[i, k] += sign * h
            ctx.setPositions(p)
            e.append(energy_forces(ctx)[0])
        assert -(e[0] - e[1]) / (2 * h) == pytest.approx(f[i, k], rel=1e-6, abs=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ml_region_subset(backend):
    """A subset sees only itself: energy/forces equal ASE on those atoms; others feel no ML force."""
    atoms = cluster()
    subset = [0, 2, 3, 9, 11, 20, 30]
    system = empty_system(atoms)
    system.addForce(create_force(MODEL, topology_of(atoms), atoms=subset, backend=backend))
    e, f = energy_forces(context_for(system, atoms))
    e_ref, f_ref = ase_reference(atoms[subset])
    assert_close(e, f[subset], e_ref, f_ref)
    rest = np.setdiff1d(np.arange(len(atoms)), subset)
    assert np.all(f[rest] == 0.0)


def test_float32_model_evaluation():
    atoms = periodic_cubic()
    e, f = openmm_energy_forces(atoms, dtype="float32")
    e_ref, f_ref = ase_reference(atoms)
    assert_close(e, f, e_ref, f_ref, rel=1e-4)
    assert e != e_ref  # it really ran in single precision


def test_python_backend_equals_torch_backend_on_md_trajectory():
    atoms = periodic_triclinic()
    results = []
    for backend in ("torch", "python"):
        system = empty_system(atoms)
        system.addForce(create_force(MODEL, topology_of(atoms), backend=backend))
        ctx = context_for(system, atoms)
        ctx.setVelocitiesToTemperature(600, 1)
        ctx.getIntegrator().step(5)
        results.append(energy_forces(ctx))
    assert_close(*results[1], *results[0], rel=1e-10)


def test_python_force_survives_deepcopy_and_xml():
    """PythonForce pickles by model path: XML round trips and deepcopy (openmm-ml interpolation) work."""
    atoms = cluster()
    force = create_force(MODEL, topology_of(atoms), backend="python", atoms=[0, 1, 2, 5])
    system = empty_system(atoms)
    system.addForce(copy.deepcopy(force))
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    e, f = energy_forces(context_for(system, atoms))
    assert_close(e, f[[0, 1, 2, 5]], *ase_reference(atoms[[0, 1, 2, 5]]))


def test_loaded_model_and_element_objects_accepted():
    from openmm.app import Element

    import mlpot_plugins

    model = mlpot_plugins.load(MODEL)
    force = create_force(model, [Element.getBySymbol("Cu"), "Au"], backend="python")
    system = openmm.System()
    system.addParticle(63.5)
    system.addParticle(197.0)
    system.addForce(force)
    pos = np.array([[0.0, 0.0, 0.0], [2.7, 0.1, 0.0]])
    e, f = energy_forces(context_for(system, pos))
    from ase import Atoms

    assert_close(e, f, *ase_reference(Atoms("CuAu", positions=pos)))


def test_cuda_graph_properties_set_for_cuda_device():
    """The properties are set at creation (no GPU needed); only an OpenMM CUDA platform reads them."""
    props = dict(create_force(MODEL, ["Cu", "Au"], device="cuda", backend="torch").getProperties())
    assert props == {"useCUDAGraphs": "false", "CUDAGraphWarmupSteps": "10"}
    props = dict(create_force(MODEL, ["Cu", "Au"], device="cuda", cuda_graphs=True, backend="torch").getProperties())
    assert props["useCUDAGraphs"] == "true"
    assert dict(create_force(MODEL, ["Cu"], backend="torch").getProperties())["useCUDAGraphs"] == "false"


def test_auto_takes_the_best_available_backend_and_says_which(caplog):
    from mlpot_plugins.openmm.backends import BACKENDS as PREFERENCE

    atoms = cluster()
    with caplog.at_level("INFO", logger="mlpot_plugins.openmm"):
        force = create_force(MODEL, topology_of(atoms))
    assert force.mlpot_backend == BACKENDS[0] == [b for b in PREFERENCE if b in BACKENDS][0]
    assert force.mlpot_backend_reason.startswith(f"auto: {BACKENDS[0]} (")
    assert f"mlpot OpenMM backend: auto: {BACKENDS[0]}" in caplog.text
    for backend in BACKENDS:  # a named backend is taken as asked, and says so too
        assert create_force(MODEL, topology_of(atoms), backend=backend).mlpot_backend == backend


@pytest.mark.parametrize("backend", SERIALIZABLE_BACKENDS)
def test_serialized_system_and_state_continue_the_run(backend):
    """10 steps, System and State through XML into a new Context, 10 more == 20 uninterrupted steps."""
    atoms = periodic_triclinic()
    system = empty_system(atoms)
    system.addForce(create_force(MODEL, topology_of(atoms), backend=backend))
    straight = context_for(system, atoms)
    straight.setVelocitiesToTemperature(600, 3)
    start = straight.getState(getPositions=True, getVelocities=True)
    straight.getIntegrator().step(20)
    first = context_for(system, atoms)
    first.setState(start)
    first.getIntegrator().step(10)
    xml_system = openmm.XmlSerializer.serialize(system)
    xml_state = openmm.XmlSerializer.serialize(first.getState(getPositions=True, getVelocities=True))
    second = context_for(openmm.XmlSerializer.deserialize(xml_system), atoms)
    second.setState(openmm.XmlSerializer.deserialize(xml_state))
    second.getIntegrator().step(10)
    a = straight.getState(getPositions=True, getEnergy=True)
    b = second.getState(getPositions=True, getEnergy=True)
    moved = np.abs(a.getPositions(asNumpy=True)._value - atoms.positions * 0.1).max()
    assert moved > 1e-3  # the run really moved the atoms
    np.testing.assert_allclose(b.getPositions(asNumpy=True)._value, a.getPositions(asNumpy=True)._value,
                               rtol=0, atol=1e-12)
    assert b.getPotentialEnergy()._value == pytest.approx(a.getPotentialEnergy()._value, rel=1e-12)
