"""The native OpenMM plugin (top-level openmm/, mlpot_plugins/openmm/native.py): MLPotForce equals the ASE
calculator, conserves energy, survives serialization (XmlSerializer, deepcopy, CustomCVForce, checkpoint and
continuation), and hands out the committee statistics of the evaluation that drove the step.
The plugin is compiled once per cache (session fixture; about a minute the first time)."""
import copy
import shutil

import numpy as np
import openmm
import pytest

from mlpot_plugins import units
from mlpot_plugins.ase import MLPotCalculator
from mlpot_plugins.openmm import native
from mlpot_plugins.openmm.ml_region import resolve_region
from mlpot_plugins.openmm.model_loading import load_for_openmm
from mlpot_plugins.pretrained import pretrained_dir
from openmm_systems import (COMMITTEE, MODEL, SYSTEMS, ase_reference, context_for, empty_system, energy_forces,
                            periodic_cubic, topology_of)
from test_openmm_md import nve_drift

TOL = 1e-10


@pytest.fixture(scope="session")
def plugin():
    ok, why = native.native_available()  # builds the plugin on first use (one-time cost of the session)
    assert ok, why
    return native.plugin_path(build=False)


def native_force(model, topology, atoms=None, dtype=None, device="cpu"):
    loaded = load_for_openmm(model, "cpu", dtype)
    return native.create_native_force(loaded, resolve_region(loaded.species, topology, atoms), device)


def system_with(atoms, force):
    system = empty_system(atoms)
    system.addForce(force)
    return system


def assert_close(got, want, tol=TOL):
    (e, f), (e0, f0) = got, want
    assert abs(e - e0) <= tol * abs(e0)
    assert np.abs(f - f0).max() <= tol * np.abs(f0).max()


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
@pytest.mark.parametrize("name", sorted(SYSTEMS))
def test_native_equals_ase(plugin, name, platform):
    atoms = SYSTEMS[name]()
    ctx = context_for(system_with(atoms, native_force(MODEL, topology_of(atoms))), atoms, platform)
    assert_close(energy_forces(ctx), ase_reference(atoms))


def test_native_equals_ase_cu_emt_and_moved_by_lattice_vectors(plugin):
    """The message-passing cu-emt model; positions shifted by lattice vectors give the same numbers."""
    atoms = SYSTEMS["triclinic"]()
    atoms.symbols[:] = "Cu"
    ctx = context_for(system_with(atoms, native_force("cu-emt", topology_of(atoms))), atoms, "CPU")
    want = ase_reference(atoms, "cu-emt")
    assert_close(energy_forces(ctx), want)
    moved = atoms.positions + np.array([2, -1, 0]) @ atoms.cell.array + np.array([0, 1, 3]) @ atoms.cell.array * \
        (np.arange(len(atoms)) % 2)[:, None]
    ctx.setPositions(moved * units.NM_PER_ANGSTROM)
    assert_close(energy_forces(ctx), want)


def test_ml_region_sees_only_its_atoms(plugin):
    atoms = periodic_cubic()
    region = [0, 3, 4, 7, 8, 12, 15, 20, 21, 30]
    ctx = context_for(system_with(atoms, native_force(MODEL, topology_of(atoms), atoms=region)), atoms)
    e, f = energy_forces(ctx)
    e0, f0 = ase_reference(atoms[region])
    assert_close((e, f[region]), (e0, f0))
    others = np.setdiff1d(np.arange(len(atoms)), region)
    assert np.abs(f[others]).max() == 0.0


def test_float32_precision(plugin):
    atoms = SYSTEMS["periodic"]()
    want = ase_reference(atoms)
    ctx = context_for(system_with(atoms, native_force(MODEL, topology_of(atoms), dtype="float32")), atoms)
    e, f = energy_forces(ctx)
    assert_close((e, f), want, 1e-5)
    assert e != want[0]  # a real float32 path


def test_nve_energy_conservation(plugin):
    drift, spread, kinetic = nve_drift("CPU", make_force=lambda m, t: native_force(m, t))
    assert kinetic > 0.5
    assert spread < 0.01 * kinetic and drift < 0.005 * kinetic


def test_serialization_round_trips_and_continues(plugin):
    """System XML, deepcopy and CustomCVForce clones give the same numbers; a run continued from a checkpoint
    (System + State XML) equals the uninterrupted run."""
    atoms = periodic_cubic()
    system = system_with(atoms, native_force(MODEL, topology_of(atoms)))
    want = energy_forces(context_for(system, atoms))
    clones = [openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system)), copy.deepcopy(system)]
    for clone in clones:
        assert_close(energy_forces(context_for(clone, atoms)), want, 0.0)
    cv = openmm.CustomCVForce("2*ml")
    cv.addCollectiveVariable("ml", copy.deepcopy(system.getForce(0)))
    e, _ = energy_forces(context_for(system_with(atoms, cv), atoms))
    assert e == 2 * want[0]

    def run(sys_, state=None, steps=20):
        integ = openmm.VerletIntegrator(0.001)
        ctx = openmm.Context(sys_, integ, openmm.Platform.getPlatformByName("Reference"))
        if state is None:
            ctx.setPositions(atoms.positions * units.NM_PER_ANGSTROM)
            ctx.setVelocitiesToTemperature(300, 5)
        else:
            ctx.setState(state)
        integ.step(steps)
        return ctx.getState(getPositions=True, getVelocities=True)

    straight = run(system, steps=40).getPositions(asNumpy=True)._value
    half = openmm.XmlSerializer.serialize(run(system))
    restarted = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    continued = run(restarted, openmm.XmlSerializer.deserialize(half)).getPositions(asNumpy=True)._value
    assert np.abs(continued - straight).max() < 1e-12


def test_many_forces_and_reinitialize(plugin):
    """Forces made through the XML form stay valid when their Python objects go, across many Systems and
    Context reinitialisation."""
    atoms = SYSTEMS["cluster"]()
    top = topology_of(atoms)
    want = ase_reference(atoms)
    systems = [system_with(atoms, native_force(MODEL, top)) for _ in range(20)]
    for system in systems[::5]:
        ctx = context_for(system, atoms)
        assert_close(energy_forces(ctx), want)
        ctx.reinitialize(preserveState=True)
        assert_close(energy_forces(ctx), want)
    assert native.native_force_info(systems[3].getForce(0))["modelPath"].endswith(f"{MODEL}.pt")


def test_moved_model_found_through_model_dir(plugin, tmp_path, monkeypatch):
    atoms = SYSTEMS["cluster"]()
    model = tmp_path / "m.pt"
    shutil.copy(pretrained_dir() / f"{MODEL}.pt", model)
    xml = openmm.XmlSerializer.serialize(system_with(atoms, native_force(model, topology_of(atoms))))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    model.rename(elsewhere / "m.pt")
    with pytest.raises(openmm.OpenMMException, match="no longer exists.*MLPOT_MODEL_DIR"):
        context_for(openmm.XmlSerializer.deserialize(xml), atoms)
    monkeypatch.setenv("MLPOT_MODEL_DIR", str(elsewhere))
    assert_close(energy_forces(context_for(openmm.XmlSerializer.deserialize(xml), atoms)), ase_reference(atoms))


def test_committee_statistics_from_the_same_evaluation(plugin):
    """Requested statistics come with the evaluation (no second pass) and equal the ASE calculator's."""
    atoms = SYSTEMS["triclinic"]()
    force = native_force(COMMITTEE, topology_of(atoms))
    tag = native.native_force_info(force)["tag"]
    ctx = context_for(system_with(atoms, force), atoms)
    assert native.read_uncertainty(tag, ctx, len(atoms)) is None
    energy_forces(ctx)
    assert native.read_uncertainty(tag, ctx, len(atoms)) is None  # not asked: not computed
    native.request_uncertainty(tag, ctx, "next")
    e, f = energy_forces(ctx)
    got = native.read_uncertainty(tag, ctx, len(atoms))
    ref = atoms.copy()
    ref.calc = MLPotCalculator(COMMITTEE)
    for key in ("forces_std", "energies_std"):
        assert np.allclose(got[key], ref.calc.get_property(key, ref), rtol=TOL, atol=0)
    assert got["energy_std"] == pytest.approx(ref.calc.get_property("energy_std", ref), rel=TOL)
    assert got["forces_std"].max() > 1e-3  # a real committee spread
    assert_close((e, f), ase_reference(atoms, COMMITTEE))  # the driving numbers are the same
    energy_forces(ctx)  # "next" is one-shot (and the same positions reuse the last evaluation: no model call)
    assert native.read_uncertainty(tag, ctx, len(atoms))["evaluation"] == got["evaluation"]
    assert_close(energy_forces(ctx), (e, f))
    native.request_uncertainty(tag, ctx, "always")  # a pending request always evaluates
    energy_forces(ctx)
    energy_forces(ctx)
    assert native.read_uncertainty(tag, ctx, len(atoms))["evaluation"] == got["evaluation"] + 2


@pytest.mark.parametrize("name", sorted(SYSTEMS))
def test_torch_neighbour_list_of_the_cuda_kernel(plugin, name, monkeypatch):
    """The CUDA kernel's neighbour list (torch operations, Model::neighbor_list_torch), run here on the CPU by
    the Reference kernel, gives the ASE numbers too (the cluster's cells are fewer than the search reach, the
    periodic boxes are smaller than twice the cutoff)."""
    monkeypatch.setenv("MLPOT_OPENMM_TORCH_NEIGHBORS", "1")
    atoms = SYSTEMS[name]()
    ctx = context_for(system_with(atoms, native_force(COMMITTEE, topology_of(atoms))), atoms)
    assert_close(energy_forces(ctx), ase_reference(atoms, COMMITTEE))


@pytest.mark.parametrize("torch_neighbors", ["0", "1"])
def test_sparse_cluster(plugin, torch_neighbors, monkeypatch):
    """Atoms micrometres apart (a cell list as large as the extent would need 1e9 cells) still equal ASE."""
    from ase import Atoms

    monkeypatch.setenv("MLPOT_OPENMM_TORCH_NEIGHBORS", torch_neighbors)
    atoms = Atoms("Cu2AuCu", positions=[[0, 0, 0], [2.5, 0.3, 0], [1e4, 0, 0], [1e4, 2.6, 0.4]])
    ctx = context_for(system_with(atoms, native_force(MODEL, topology_of(atoms))), atoms)
    assert_close(energy_forces(ctx), ase_reference(atoms))


def test_force_group_is_respected_and_serialized(plugin):
    atoms = SYSTEMS["cluster"]()
    force = native_force(MODEL, topology_of(atoms))
    force.setForceGroup(2)
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system_with(atoms, force)))
    assert system.getForce(0).getForceGroup() == 2 and system.getForce(0).getName() == f"mlpot:{MODEL}"
    ctx = context_for(system, atoms)
    assert energy_forces(ctx, groups={0})[0] == 0.0
    assert_close(energy_forces(ctx, groups={2}), ase_reference(atoms))
