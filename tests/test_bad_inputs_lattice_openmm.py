"""Bad inputs of lattice models in OpenMM (create_force, the reporter, MLPotential) and of the exported exact
solver (compute_lattice_block_fallback, `mlpot holstein export`): each case asserts the exception class and the
words naming the problem and the fix. Extend the CASES tables for new options."""
import math

import numpy as np
import openmm
import pytest
import torch

import mlpot_plugins
from mlpot_plugins.contract import ModelFormatError
from mlpot_plugins.holstein.fallback import with_fallback
from mlpot_plugins.holstein.model import D4LatticeForceField
from mlpot_plugins.holstein.params import HolsteinParams, periodic_block
from mlpot_plugins.openmm import UncertaintyReporter, create_force
from mlpot_plugins.openmm.lattice import lattice_positions, lattice_system, lattice_topology
from openmmml import MLPotential

from cli_util import run_cli
from openmm_systems import periodic_cubic, topology_of

P = HolsteinParams(kT=0.5)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lob")
    torch.manual_seed(0)
    plain = D4LatticeForceField(P.to_dict(), radius2=2, channels=2, hidden=4, ensemble_size=2, dtype=torch.float64)
    out = {"plain": mlpot_plugins.export(plain, d / "plain.pt", kind="lattice", extra={"holstein": P.to_dict()})}
    fb = with_fallback(D4LatticeForceField(P.to_dict(), radius2=2, channels=2, hidden=4, ensemble_size=2,
                                           dtype=torch.float64), P, radius=2, n_moments=32)
    out["fb"] = mlpot_plugins.export(fb, d / "fb.pt", kind="lattice", extra={"holstein": P.to_dict()})
    out["dir"] = d
    return out


def make(files, key):
    return str(files[key])


# (name, callable(files) that must raise, exception class, regex of the message: problem and fix)
CREATE = [
    ("non-square count", lambda f: create_force(make(f, "plain"), ["Q"] * 50),
     ValueError, r"50 particles, which is not L\*L .*7x7 = 49, 8x8 = 64.*lattice_topology\(L\)"),
    ("odd L", lambda f: create_force(make(f, "plain"), lattice_topology(9)),
     ValueError, r"81 particles = 9x9 sites: lattice size L=9 is not supported: need an even L"),
    ("L below the patch", lambda f: create_force("holstein-d4", lattice_topology(6)),
     ValueError, r"36 particles = 6x6 sites: .*need an even L >= 7.*patch width"),
    ("atomistic topology", lambda f: create_force("holstein-d4", topology_of(periodic_cubic())),
     ValueError, r"particle 0 is an atom of element Cu \(32 such.*lattice model.*lattice_topology\(L\).*atomistic "
                 r"model"),
    ("wrong labels", lambda f: create_force("holstein-d4", ["Q"] * 63 + ["X"]),
     ValueError, r"particle 63 is labelled 'X'.*lattice sites 'Q' without element"),
    ("ML-region subset", lambda f: create_force("holstein-d4", lattice_topology(8), atoms=[0, 1]),
     ValueError, r"atoms=\[\.\.\.\] \(an ML region\) is for atomistic models.*leave atoms out"),
    ("string instead of topology", lambda f: create_force("holstein-d4", "QQQQ"),
     TypeError, r"give a Topology \(lattice_topology\(L\)\) or a list of L\*L labels 'Q'"),
    ("fallback without solver", lambda f: create_force(make(f, "plain"), lattice_topology(8), fallback=0.1),
     ModelFormatError, r"carries no exact local solver.*mlpot holstein export .*plain.pt --fallback-radius 6 --out "
                       r"plain-fallback.pt"),
    ("fallback threshold 0", lambda f: create_force(make(f, "fb"), lattice_topology(8), fallback=0.0),
     ValueError, r"fallback threshold 0.0 must be a force std > 0.*e.g. 0.05"),
    ("fallback threshold NaN", lambda f: create_force(make(f, "fb"), lattice_topology(8), fallback=math.nan),
     ValueError, r"fallback threshold nan must be a force std > 0"),
    ("fallback threshold text", lambda f: create_force(make(f, "fb"), lattice_topology(8), fallback="high"),
     ValueError, r"fallback threshold 'high' must be a force std > 0"),
    ("fallback on an atomistic model", lambda f: create_force("morse-cuau", ["Cu", "Au"], fallback=0.1),
     ValueError, r"fallback is for lattice models, this one is atomistic; run it without a fallback threshold"),
    ("lattice topology, atomistic model", lambda f: create_force("morse-cuau", lattice_topology(4)),
     ValueError, r"element\(s\) \['None'\].*not in the model's species"),
    ("lattice model in MLPotential", lambda f: MLPotential("mlpot", modelPath="holstein-d4"),
     ValueError, r"a 'lattice' model cannot be used here; use an atomistic model"),
]


@pytest.mark.parametrize("name,call,exc,match", CREATE, ids=[c[0] for c in CREATE])
def test_create_force_bad_inputs(files, name, call, exc, match):
    with pytest.raises(exc, match=match):
        call(files)


@pytest.mark.parametrize("backend", ["torch", "python"])
def test_system_with_another_particle_count_fails_at_evaluation(files, backend):
    """The force was built for an 8x8 topology, the System has 10x10 sites: a clear error, not a wrong force."""
    system = lattice_system(10, P)
    system.addForce(create_force(make(files, "plain"), lattice_topology(8), backend=backend))
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(lattice_positions(np.zeros((10, 10))))
    with pytest.raises(Exception, match=r"created for 8x8 = 64 sites but the System has 100 particles.*"
                                        r"lattice_topology\(L\)"):
        context.getState(getForces=True)


def test_reporter_with_an_atomistic_topology(files, tmp_path):
    from openmm.app import Simulation

    atoms = periodic_cubic()
    system = openmm.System()
    for _ in range(len(atoms)):
        system.addParticle(63.5)
    sim = Simulation(topology_of(atoms), system, openmm.VerletIntegrator(0.001),
                     openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(atoms.positions / 10)
    sim.reporters.append(UncertaintyReporter("holstein-d4", tmp_path / "u.txt", 1))
    with pytest.raises(ValueError, match=r"particle 0 is an atom of element Cu.*lattice_topology\(L\)"):
        sim.step(1)


SOLVER = [
    ("halo below fallback_range", lambda m: m.compute_lattice_block_fallback(torch.zeros(8, 8, dtype=torch.float64), 1, 0.1),
     ValueError, r"halo 1 is smaller than the model's fallback range.*at least 2 sites.*window radius 2.*halo >= 2"),
    ("module threshold NaN", lambda m: m._call(m.module.compute_lattice_block_fallback,
                                               torch.zeros(8, 8, dtype=torch.float64), 2, math.nan),
     ValueError, r"fallback threshold nan must be a force std > 0 .*pass a positive threshold"),
    ("module threshold negative", lambda m: m._call(m.module.compute_lattice_block_fallback,
                                                    torch.zeros(8, 8, dtype=torch.float64), 2, -1.0),
     ValueError, r"fallback threshold -1\.0? must be a force std > 0"),
    ("fractional halo", lambda m: m.compute_lattice_block_fallback(torch.zeros(8, 8, dtype=torch.float64), 2.5, 0.1),
     ValueError, r"halo 2.5 must be a whole number of sites; the fallback needs at least 2"),
    ("no interior", lambda m: m.compute_lattice_block_fallback(torch.zeros(4, 4, dtype=torch.float64), 2, 0.1),
     ValueError, r"has no interior sites for halo 2"),
]


@pytest.mark.parametrize("name,call,exc,match", SOLVER, ids=[c[0] for c in SOLVER])
def test_exported_solver_bad_inputs(files, name, call, exc, match):
    with pytest.raises(exc, match=match):
        call(mlpot_plugins.load(files["fb"]))


def test_block_method_of_a_model_without_solver(files):
    with pytest.raises(ModelFormatError, match=r"carries no exact local solver.*mlpot holstein export"):
        mlpot_plugins.load(files["plain"]).compute_lattice_block_fallback(
            periodic_block(torch.zeros(6, 6, dtype=torch.float64), 2), 2, 0.1)


def test_single_member_model_cannot_carry_the_solver():
    m = D4LatticeForceField(P.to_dict(), radius2=2, channels=2, hidden=4, ensemble_size=1)
    with pytest.raises(ValueError, match=r"needs a committee \(ensemble_size > 1\).*--ensemble 4"):
        with_fallback(m, P)
    with pytest.raises(ValueError, match=r"fallback radius=0 must be an integer >= 1"):
        with_fallback(D4LatticeForceField(P.to_dict(), radius2=2, channels=2, hidden=4), P, radius=0)


EXPORT = [
    ("radius 0", ["--fallback-radius", "0"], r"argument --fallback-radius: .*0"),
    ("moments text", ["--fallback-moments", "many"], r"argument --fallback-moments"),
    ("no --out", None, r"the following arguments are required: --out"),
    ("drop and add", ["--no-fallback", "--fallback-radius", "3"], r"--no-fallback contradicts --fallback-radius"),
]


@pytest.mark.parametrize("name,extra,match", EXPORT, ids=[c[0] for c in EXPORT])
def test_export_command_bad_options(files, capsys, name, extra, match):
    argv = ["holstein", "export", files["plain"]] + (extra + ["--out", files["dir"] / "x.pt"] if extra is not None else [])
    code, err = run_cli(argv, capsys)
    assert code == 2 and "Traceback" not in err, err
    assert __import__("re").search(match, err), err
    assert not (files["dir"] / "x.pt").exists()


def test_export_command_refuses_an_atomistic_model(files, capsys):
    code, err = run_cli(["holstein", "export", "morse-cuau", "--fallback-radius", "6", "--out",
                         files["dir"] / "y.pt"], capsys)
    assert code == 2 and "not a Holstein lattice model written by `mlpot holstein train`" in err, err
