"""Lattice models as OpenMM forces (mlpot_plugins/openmm/lattice.py): particle k = site divmod(k, L), Q = z.
Both backends give compute_lattice's forces (and the energy model's energy) on the full grid, x/y forces 0; with
``fallback`` they give the exported solver's (= Python GatedForces') forces; a LangevinMiddleIntegrator run
keeps equipartition m <v_z^2> = kT per site; the uncertainty reporter records compute_lattice's per-site std."""
import numpy as np
import openmm
import pytest
import torch

import mlpot_plugins
from mlpot_plugins.holstein.dynamics import model_params
from mlpot_plugins.holstein.fallback import GatedForces, with_fallback
from mlpot_plugins.holstein.model import D4LatticeForceField
from mlpot_plugins.holstein.params import HolsteinParams, periodic_block, stagger
from mlpot_plugins.openmm import UncertaintyReporter, create_force, read_uncertainty
from mlpot_plugins.openmm.lattice import (lattice_field, lattice_positions, lattice_system, lattice_topology,
                                          openmm_settings)

P = HolsteinParams(kT=0.5)
L = 8


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """float64 committees: "energy" (energy-based, with the exact solver) and "direct" (no solver)"""
    out = {}
    for variant in ("energy", "direct"):
        torch.manual_seed(3)
        m = D4LatticeForceField(P.to_dict(), radius2=2, channels=3, hidden=6, ensemble_size=3,
                                energy_based=variant == "energy", dtype=torch.float64)
        if variant == "energy":
            m = with_fallback(m, P, radius=3, n_moments=96)
        out[variant] = mlpot_plugins.load(mlpot_plugins.export(
            m, tmp_path_factory.mktemp(variant) / "m.pt", kind="lattice", extra={"holstein": P.to_dict()}))
    return out


def field(seed=0):
    return torch.randn(L, L, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 1.5


def evaluate(model, Q, backend, **kw):
    system = lattice_system(L, P)
    system.addForce(create_force(model, lattice_topology(L), backend=backend, **kw))
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(lattice_positions(Q.numpy()))
    state = context.getState(getForces=True, getEnergy=True)
    return state.getPotentialEnergy()._value, state.getForces(asNumpy=True)._value


@pytest.mark.parametrize("backend", ["torch", "python"])
@pytest.mark.parametrize("variant", ["energy", "direct"])
def test_forces_equal_compute_lattice_on_the_full_grid(models, variant, backend):
    model = models[variant]
    Q = field(seed=1)
    energy, F = evaluate(model, Q, backend)
    ref = model.module.compute_lattice(Q, False)
    # particle k = site divmod(k, L): row-major
    assert np.abs(F[:, 2] - ref["forces"].numpy().reshape(-1)).max() < 1e-10
    assert np.abs(ref["forces"].numpy()).max() > 0.5 and np.all(F[:, :2] == 0.0)
    assert energy == pytest.approx(float(ref["energy"].detach()), abs=1e-10) if variant == "energy" else energy == 0.0
    assert np.array_equal(lattice_field(lattice_positions(Q.numpy())), Q.numpy())


@pytest.mark.parametrize("backend", ["torch", "python"])
def test_fallback_forces_equal_the_exported_solver_and_python_fallback(models, backend):
    model = models["energy"]
    Q = field(seed=2)
    std = model.module.compute_lattice(Q, True)["forces_std"].flatten().sort().values
    threshold = 0.5 * (std[40] + std[41]).item()  # 23 of 64 sites fall back
    _, F = evaluate(model, Q, backend, fallback=threshold)
    h = model.metadata["fallback_range"]
    solver = model.compute_lattice_block_fallback(periodic_block(Q, h), h, threshold)
    assert solver["fallback_mask"].sum() == 23
    assert np.abs(F[:, 2] - solver["forces"].numpy().reshape(-1)).max() < 1e-10
    gated = GatedForces(model.module, P, threshold, radius=3, n_moments=96, max_fraction=None)(Q)
    assert np.abs(F[:, 2] - gated.numpy().reshape(-1)).max() < 1e-10
    plain = model.module.compute_lattice(Q, False)["forces"].numpy().reshape(-1)
    assert (np.abs(F[:, 2] - plain) > 1e-3).sum() == 23 and np.all(F[:, :2] == 0.0)


def test_langevin_equipartition_and_per_site_std(tmp_path):
    """The shipped holstein-d4 under OpenMM's LangevinMiddleIntegrator, the documented unit mapping (friction
    raised to 1/ps so velocities decorrelate in 20 steps): m <v_z^2> = kT on every site within error."""
    from openmm.app import Simulation

    model = mlpot_plugins.load("holstein-d4")
    p = model_params(model)
    p.gamma = p.m * 1.0  # OpenMM friction gamma / m = 1 / ps
    s = openmm_settings(p)
    assert s["temperature"]._value == pytest.approx(p.kT / 0.0083144626, rel=1e-8)
    assert (s["friction"]._value, s["dt"]._value, s["mass"]._value) == (1.0, p.dt, p.m)
    system = lattice_system(L, p)
    system.addForce(create_force(model, lattice_topology(L)))
    sim = Simulation(lattice_topology(L), system, openmm.LangevinMiddleIntegrator(s["temperature"], s["friction"],
                                                                                  s["dt"]),
                     openmm.Platform.getPlatformByName("Reference"))
    A = p.cdw_amplitude()
    sim.context.setPositions(lattice_positions((A * stagger(L)).numpy()))
    sim.context.setVelocitiesToTemperature(s["temperature"], 1)
    reporter = UncertaintyReporter(model, tmp_path / "std.txt", 50)
    sim.reporters.append(reporter)
    sim.step(100)
    kin = []
    for _ in range(120):
        sim.step(10)
        v = sim.context.getState(getVelocities=True).getVelocities(asNumpy=True)._value
        kin.append(p.m * v[:, 2] ** 2)
    kin = np.array(kin)  # [samples, sites], kJ/mol = t
    blocks = kin.reshape(12, -1).mean(1)  # 12 blocks of 100 steps (5 velocity relaxation times)
    ratio, err = blocks.mean() / p.kT, blocks.std(ddof=1) / np.sqrt(len(blocks)) / p.kT
    assert err < 0.05 and abs(ratio - 1) < 4 * err, (ratio, err)
    Q = torch.as_tensor(lattice_field(sim.context.getState(getPositions=True).getPositions(asNumpy=True)._value))
    assert (Q * stagger(L)).mean() > 0.5 * A  # still the checkerboard: the ML forces hold it
    reporter.close()
    rec = read_uncertainty(tmp_path / "std.npy")
    assert list(rec["step"]) == list(range(50, 1301, 50)) and np.isnan(rec["energy_std"]).all()
    std = model.module.compute_lattice(Q.float(), True)["forces_std"].double().numpy().reshape(-1)
    assert np.allclose(rec["forces_std"][-1], std, rtol=1e-5, atol=1e-7) and std.max() > 0
