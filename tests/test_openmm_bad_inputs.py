"""Bad inputs to the OpenMM integration raise clear errors naming the problem and the fix."""
import numpy as np
import openmm.app as app
import pytest

from mlpot_plugins import ModelFormatError
from mlpot_plugins.openmm import UncertaintyReporter, create_force
from openmm_systems import COMMITTEE, MODEL, cluster, topology_of


def water_topology():
    top = app.Topology()
    res = top.addResidue("HOH", top.addChain())
    for name, el in [("O", "O"), ("H1", "H"), ("H2", "H")]:
        top.addAtom(name, app.Element.getBySymbol(el), res)
    return top


@pytest.mark.parametrize("backend", ["torch", "python"])
def test_unknown_element(backend):
    with pytest.raises(ValueError, match=r"\['H', 'O'\] \(atom\(s\) \[0, 1, 2\]\) not in the model's species \['Cu', 'Au'\].*atoms=\[\.\.\.\]"):
        create_force(MODEL, water_topology(), backend=backend)


def test_unknown_element_outside_ml_region_is_fine():
    top = topology_of(cluster())
    res = top.addResidue("HOH", next(top.chains()))
    top.addAtom("O", app.Element.getBySymbol("O"), res)
    with pytest.raises(ValueError, match=r"\['O'\] \(atom\(s\) \[32\]\)"):
        create_force(MODEL, top)
    # with the O left out of the ML region, the force acts on the 32 metal atoms exactly as ASE does
    from openmm_systems import ase_reference, context_for, empty_system, energy_forces

    atoms = cluster()
    system = empty_system(atoms)
    system.addParticle(16.0)
    system.addForce(create_force(MODEL, top, atoms=range(32)))
    pos = np.vstack([atoms.positions, [[30.0, 30.0, 30.0]]])
    e, f = energy_forces(context_for(system, pos))
    e_ref, f_ref = ase_reference(atoms)
    assert e == pytest.approx(e_ref, rel=1e-10)
    np.testing.assert_allclose(f[:32], f_ref, rtol=1e-8, atol=1e-8)
    np.testing.assert_array_equal(f[32], 0.0)


def test_particle_without_element():
    with pytest.raises(ValueError, match=r"\['None'\]"):
        create_force(MODEL, ["Cu", None])


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist and is not a shipped model name"):
        create_force(tmp_path / "nope.pt", ["Cu"])


def test_not_a_model_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("hello")
    with pytest.raises(ModelFormatError, match="not a TorchScript archive"):
        create_force(bad, ["Cu"])


@pytest.mark.parametrize("atoms, err, match", [
    ([0, 5, 40], IndexError, r"\[40\] out of range for a system of 32 particles; use indices 0..31"),
    ([-1, 3], IndexError, r"\[-1\] out of range"),
    ([1, 2, 2], ValueError, r"\[2\] listed more than once"),
    ([0.5, 1], TypeError, "integer particle indices"),
    (7, TypeError, "iterable of particle indices"),
])
@pytest.mark.parametrize("backend", ["torch", "python"])
def test_subset_errors(atoms, err, match, backend):
    with pytest.raises(err, match=match):
        create_force(MODEL, topology_of(cluster()), atoms=atoms, backend=backend)


def test_bad_backend_dtype_and_cuda_graphs():
    with pytest.raises(ValueError, match=r"backend 'jax' is not one of \['auto', 'native', 'torch', 'python'\]"):
        create_force(MODEL, ["Cu"], backend="jax")
    with pytest.raises(ValueError, match="dtype 'float16' is not supported"):
        create_force(MODEL, ["Cu"], dtype="float16")
    with pytest.raises(ValueError, match="cuda_graphs=True needs device='cuda'"):
        create_force(MODEL, ["Cu"], cuda_graphs=True)
    with pytest.raises(TypeError, match="not a string"):
        create_force(MODEL, "CuAu")


def test_reporter_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="needs a committee model"):
        UncertaintyReporter(MODEL, tmp_path / "u.txt", 10)
    with pytest.raises(ValueError, match="positive number of steps"):
        UncertaintyReporter(COMMITTEE, tmp_path / "u.txt", 0)
    with pytest.raises(ValueError, match=r"action 'explode' is not one of \['warn', 'stop'\]"):
        UncertaintyReporter(COMMITTEE, tmp_path / "u.txt", 10, action="explode")
    with pytest.raises(ValueError, match="threshold must be a positive"):
        UncertaintyReporter(COMMITTEE, tmp_path / "u.txt", 10, threshold=-1.0)


@pytest.mark.parametrize("backend", ["torch", "python"])
def test_force_for_wrong_particle_count(backend):
    """A force built for 2 particles in a 3-particle System fails with a message, not a wrong number."""
    import openmm

    system = openmm.System()
    for _ in range(3):
        system.addParticle(63.5)
    system.addForce(create_force(MODEL, ["Cu", "Cu"], backend=backend))
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions([openmm.Vec3(0, 0, 0), openmm.Vec3(0.25, 0, 0), openmm.Vec3(0.5, 0, 0)])
    with pytest.raises(openmm.OpenMMException, match="created for 2 particles but the System has 3"):
        ctx.getState(getEnergy=True)


def test_ml_region_beyond_system():
    import openmm

    system = openmm.System()
    for _ in range(3):
        system.addParticle(63.5)
    system.addForce(create_force(MODEL, ["Cu"] * 5, atoms=[0, 4], backend="torch"))  # topology of 5, System of 3
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions([openmm.Vec3(0, 0, 0), openmm.Vec3(0.25, 0, 0), openmm.Vec3(0.5, 0, 0)])
    with pytest.raises(openmm.OpenMMException, match="refers to particle 4 but the System has only 3"):
        ctx.getState(getEnergy=True)
