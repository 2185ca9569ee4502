"""Bad inputs to the OpenMM integration (real Contexts, real files): a clear exception naming the problem and
the fix, never a segfault or a silently wrong number. Extend it by adding rows to the tables."""
import copy
import shutil

import numpy as np
import openmm
import openmm.app as app
import pytest
import torch

from mlpot_plugins import pretrained_path
from mlpot_plugins.openmm import UncertaintyReporter, create_force
from openmm_systems import COMMITTEE, MODEL, cluster, context_for, empty_system, energy_forces, periodic_cubic, topology_of
from test_bad_inputs_core import MODEL_CASES

BACKENDS = ["torch", "python"]


@pytest.mark.parametrize("make, err, match", [c[1:] for c in MODEL_CASES[:7]], ids=[c[0] for c in MODEL_CASES[:7]])
@pytest.mark.parametrize("entry", ["create_force", "reporter", "openmm-ml"])
def test_bad_model_file(tmp_path, make, err, match, entry):
    model = make(tmp_path)
    with pytest.raises(err, match=match):
        if entry == "create_force":
            create_force(model, ["Cu"])
        elif entry == "reporter":
            UncertaintyReporter(model, tmp_path / "u.txt", 10)
        else:
            from openmmml import MLPotential

            MLPotential("mlpot", modelPath=model)


DEVICE_CASES = [("torch", "banana", ValueError, r"device 'banana' is not a torch device"),
                ("python", "banana", ValueError, r"device 'banana' is not a torch device"),
                ("python", "meta", ValueError, r"device 'meta' is not supported by mlpot models")]
if not torch.cuda.is_available():
    DEVICE_CASES.append(("python", "cuda", RuntimeError, r"CUDA is not available.*Use device='cpu'"))


@pytest.mark.parametrize("backend, device, err, match", DEVICE_CASES)
def test_bad_device(backend, device, err, match):
    with pytest.raises(err, match=match):
        create_force(MODEL, ["Cu"], backend=backend, device=device)


def _run(system, positions_A):
    ctx = context_for(system, positions_A)
    return energy_forces(ctx)


@pytest.mark.parametrize("backend", BACKENDS)
def test_periodic_force_in_a_system_without_box(backend):
    """Regression: OpenMM's default 2 nm box was used silently."""
    atoms = periodic_cubic()
    system = openmm.System()  # no setDefaultPeriodicBoxVectors
    for m in atoms.get_masses():
        system.addParticle(m)
    system.addForce(create_force(MODEL, atoms.get_chemical_symbols(), backend=backend, periodic=True))
    with pytest.raises(openmm.OpenMMException, match=r"System's box is OpenMM's default 2 nm cube.*setDefaultPeriodicBoxVectors"):
        _run(system, atoms.positions)


def test_periodic_true_with_a_topology_without_box():
    top = topology_of(cluster())
    with pytest.raises(ValueError, match=r"periodic=True but the Topology has no periodic box.*setPeriodicBoxVectors"):
        create_force(MODEL, top, periodic=True)


def test_a_real_2nm_box_given_by_the_topology_is_accepted():
    atoms = periodic_cubic()
    atoms.set_cell(np.eye(3) * 20.0, scale_atoms=False)
    system = empty_system(atoms)
    system.addForce(create_force(MODEL, topology_of(atoms)))
    e, _ = _run(system, atoms.positions)
    assert np.isfinite(e)


GEOMETRY_CASES = [
    ("coincident", [[0, 0, 0], [0, 0, 0], [2.5, 0, 0]], r"coincident atoms: two atoms \(indices 0 and 1\)"),
    ("nan", [[0, 0, 0], [np.nan, 0, 0], [2.5, 0, 0]], r"position of atom 1 is not finite"),
]


@pytest.mark.parametrize("pos, match", [c[1:] for c in GEOMETRY_CASES], ids=[c[0] for c in GEOMETRY_CASES])
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_geometry_in_a_context(pos, match, backend):
    system = openmm.System()
    for _ in range(3):
        system.addParticle(63.5)
    system.addForce(create_force(MODEL, ["Cu"] * 3, backend=backend))
    with pytest.raises(openmm.OpenMMException, match=match) as info:
        _run(system, np.array(pos))
    if backend == "python":  # our own re-raise puts the useful message first
        assert str(info.value).startswith("mlpot: ")


def test_flat_periodic_box_in_a_context():
    system = openmm.System()
    system.addParticle(63.5)
    system.setDefaultPeriodicBoxVectors(openmm.Vec3(0.4, 0, 0), openmm.Vec3(0, 0.4, 0), openmm.Vec3(0, 0, 0.001))
    system.addForce(create_force(MODEL, ["Cu"], periodic=True, backend="python"))
    with pytest.raises(openmm.OpenMMException, match=r"^mlpot: the periodic cell is flat or degenerate"):
        _run(system, np.zeros((1, 3)))


# --- serialization with a moved, deleted or changed model file (python backend; never a segfault) -----------
ROUND_TRIPS = {
    "xml": lambda s: openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(s)),
    "deepcopy": copy.deepcopy,
    "customcv": lambda s: _in_custom_cv(s),
}


def _in_custom_cv(system):
    """The ML force wrapped in a CustomCVForce (it clones the force through serialization)."""
    out = openmm.System()
    for i in range(system.getNumParticles()):
        out.addParticle(system.getParticleMass(i))
    cv = openmm.CustomCVForce("2*ml")
    cv.addCollectiveVariable("ml", copy.copy(system.getForce(0)))
    out.addForce(cv)
    return out


def _python_system(tmp_path):
    model = tmp_path / "model.pt"
    shutil.copy(pretrained_path(MODEL), model)
    atoms = cluster()
    system = empty_system(atoms)
    system.addForce(create_force(str(model), topology_of(atoms), backend="python"))
    return model, atoms, system


@pytest.mark.parametrize("how", list(ROUND_TRIPS))
def test_round_trip_with_model_in_place(tmp_path, how):
    model, atoms, system = _python_system(tmp_path)
    e0, f0 = _run(system, atoms.positions)
    factor = 2.0 if how == "customcv" else 1.0
    e1, f1 = _run(ROUND_TRIPS[how](system), atoms.positions)
    assert e1 == pytest.approx(factor * e0, rel=1e-12)
    np.testing.assert_allclose(f1, factor * f0, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("how", list(ROUND_TRIPS))
@pytest.mark.parametrize("fault, match", [("moved", r"no longer exists"), ("changed", r"changed since the force was serialized")])
def test_round_trip_with_model_gone(tmp_path, how, fault, match):
    model, atoms, system = _python_system(tmp_path)
    xml = openmm.XmlSerializer.serialize(system)
    if fault == "moved":
        model.rename(tmp_path / "elsewhere.pt")
    else:
        shutil.copy(pretrained_path(COMMITTEE), model)
    copied = ROUND_TRIPS[how](openmm.XmlSerializer.deserialize(xml) if how != "xml" else system)
    with pytest.raises(openmm.OpenMMException, match=match + r".*Put the model file back at .*model\.pt.*MLPOT_MODEL_DIR"):
        _run(copied, atoms.positions)


def test_moved_model_found_through_model_dir(tmp_path, monkeypatch):
    model, atoms, system = _python_system(tmp_path)
    e0, _ = _run(system, atoms.positions)
    xml = openmm.XmlSerializer.serialize(system)
    (tmp_path / "new").mkdir()
    model.rename(tmp_path / "new" / "model.pt")
    monkeypatch.setenv("MLPOT_MODEL_DIR", str(tmp_path / "new"))
    e1, _ = _run(openmm.XmlSerializer.deserialize(xml), atoms.positions)
    assert e1 == pytest.approx(e0, rel=1e-12)


def test_shipped_model_serializes_by_name():
    atoms = cluster()
    system = empty_system(atoms)
    system.addForce(create_force(MODEL, topology_of(atoms), backend="python"))
    e0, _ = _run(system, atoms.positions)
    assert _run(copy.deepcopy(system), atoms.positions)[0] == pytest.approx(e0, rel=1e-12)


# --- reporter files -------------------------------------------------------------------------------------------
REPORTER_PATH_CASES = [
    ("missing-folder", lambda t: {"file": t / "no" / "u.txt"}, FileNotFoundError, r"folder .*no' does not exist; create it"),
    ("file-is-folder", lambda t: {"file": t}, IsADirectoryError, r"is a directory; give a file name"),
    ("npy-missing-folder", lambda t: {"file": t / "u.txt", "npy": t / "x" / "u.npy"}, FileNotFoundError,
     r"npy file .*does not exist"),
    ("pdb-is-folder", lambda t: {"file": t / "u.txt", "pdb": t}, IsADirectoryError, r"pdb file .*is a directory"),
    ("same-file-twice", lambda t: {"file": t / "u.txt", "npy": t / "u.txt"}, ValueError, r"must be different files"),
    ("foreign-text-file", lambda t: (t / "u.txt").write_text("my notes\n") and {"file": t / "u.txt"}, ValueError,
     r"exists but was not written by this UncertaintyReporter.*append=False"),
    ("foreign-npy-file", lambda t: (np.save(t / "u.npy", np.array("other")), {"file": t / "u.txt"})[1], ValueError,
     r"not an mlpot uncertainty file.*append=False"),
]


@pytest.mark.parametrize("make, err, match", [c[1:] for c in REPORTER_PATH_CASES], ids=[c[0] for c in REPORTER_PATH_CASES])
def test_reporter_bad_paths_fail_before_the_run(tmp_path, make, err, match):
    kwargs = make(tmp_path)
    with pytest.raises(err, match=match):
        UncertaintyReporter(COMMITTEE, kwargs.pop("file"), 10, **kwargs)


def test_reporter_in_a_periodic_system_without_box(tmp_path):
    atoms = periodic_cubic()
    top = topology_of(atoms)
    top.setPeriodicBoxVectors(None)
    system = openmm.System()
    for m in atoms.get_masses():
        system.addParticle(m)
    nb = openmm.NonbondedForce()  # a periodic MM force makes the System periodic; its box was never set
    nb.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    nb.setCutoffDistance(0.5)
    for _ in range(len(atoms)):
        nb.addParticle(0, 0.2, 0)
    system.addForce(nb)
    sim = app.Simulation(top, system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(atoms.positions * 0.1)
    sim.reporters.append(UncertaintyReporter(COMMITTEE, tmp_path / "u.txt", 1))
    with pytest.raises(ValueError, match=r"System's box is OpenMM's default 2 nm cube"):
        sim.step(1)


def test_openmm_ml_bad_precision():
    from openmmml import MLPotential

    with pytest.raises(ValueError, match=r"precision 'half' is not supported; use 'single', 'double'"):
        MLPotential("mlpot", modelPath=MODEL, precision="half")
    with pytest.raises(ValueError, match=r"precision='single' contradicts dtype='float64'"):
        MLPotential("mlpot", modelPath=MODEL).createSystem(topology_of(cluster()), precision="single",
                                                           dtype="float64")


@pytest.mark.parametrize("atoms, err, match", [
    ([0, 99], IndexError, r"\[99\] out of range for a system of 32 particles"),
    ([3, 3], ValueError, r"\[3\] listed more than once"),
    ([0.5], TypeError, "integer particle indices"),
])
def test_reporter_bad_ml_region(tmp_path, atoms, err, match):
    """The reporter's ML region is checked like create_force's (same function, same messages)."""
    system = empty_system(cluster())
    system.addForce(create_force(MODEL, topology_of(cluster())))
    sim = app.Simulation(topology_of(cluster()), system, openmm.VerletIntegrator(0.001),
                         openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(cluster().positions * 0.1)
    sim.reporters.append(UncertaintyReporter(COMMITTEE, tmp_path / "u.txt", 1, atoms=atoms))
    with pytest.raises(err, match=match):
        sim.step(1)
    assert (tmp_path / "u.txt").read_text().count("\n") == 1  # nothing but the header was written
