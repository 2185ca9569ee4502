"""The shipped holstein-d4 as an OpenMM force (mlpot_plugins/openmm/lattice.py) under LangevinMiddleIntegrator with
the documented unit mapping and the model's own m, gamma, kT, dt: equipartition m <v_z^2> / kT per site from a
relaxed checkerboard (error from blocks of 2 velocity relaxation times), the same for mlpot's own integrator
(`mlpot holstein run`'s LangevinIntegrator, the reference: a direct-force model is not conservative, so it may sit
a little above kT in both), and the time per step of both backends (Reference platform). One run:

    PYTHONPATH=. python benchmarks/openmm_lattice.py [--L 16] [--steps 10000] [--threads 1]
"""
import argparse
import os
import time

import numpy as np
import openmm
import torch
from openmm.app import Simulation

import mlpot_plugins
from mlpot_plugins.holstein.dynamics import MLForces, model_params
from mlpot_plugins.holstein.langevin import LangevinIntegrator
from mlpot_plugins.holstein.params import stagger
from mlpot_plugins.openmm import create_force
from mlpot_plugins.openmm.lattice import lattice_positions, lattice_system, lattice_topology, openmm_settings


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--L", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = mlpot_plugins.load("holstein-d4")
    p = model_params(model)
    s = openmm_settings(p)
    L = args.L
    print(f"holstein-d4, {L}x{L}, {s}; load average {os.getloadavg()[0]:.1f}")
    relax = int(5 * p.m / p.gamma / p.dt)  # 5 velocity relaxation times
    block = int(2 * p.m / p.gamma / p.dt)

    def report(name, kin, steps, dt):
        kin = np.array(kin)[: (len(kin) * 10 // block) * block // 10]
        blocks = kin.reshape(-1, block // 10, kin.shape[-1]).mean((1, 2)) / p.kT
        print(f"{name}: {1e3 * dt:.2f} ms/step ({L * L / dt:.3g} site-steps/s); m<v_z^2>/kT = {blocks.mean():.4f} "
              f"+- {blocks.std(ddof=1) / np.sqrt(len(blocks)):.4f} ({len(blocks)} blocks of {block} steps) over "
              f"{steps} steps after {relax} steps of relaxation")

    integ = LangevinIntegrator(MLForces(model.module), p, (p.cdw_amplitude() * stagger(L)),
                               torch.randn(L, L, generator=torch.Generator().manual_seed(1),
                                           dtype=torch.float64) * (p.m * p.kT) ** 0.5, seed=2)
    integ.step(relax)
    kin, t0 = [], time.perf_counter()
    for _ in range(args.steps // 10):
        integ.step(10)
        kin.append((integ.P * integ.P).reshape(-1).numpy() / p.m)
    report("mlpot LangevinIntegrator", kin, args.steps, (time.perf_counter() - t0) / args.steps)
    for backend in ("torch", "python"):
        system = lattice_system(L, p)
        system.addForce(create_force(model, lattice_topology(L), backend=backend))
        sim = Simulation(lattice_topology(L), system, openmm.LangevinMiddleIntegrator(s["temperature"], s["friction"],
                                                                                      s["dt"]),
                         openmm.Platform.getPlatformByName("Reference"))
        sim.context.setPositions(lattice_positions((p.cdw_amplitude() * stagger(L)).numpy()))
        sim.context.setVelocitiesToTemperature(s["temperature"], 1)
        sim.step(relax)
        steps = args.steps if backend == "torch" else args.steps // 5
        kin, t0 = [], time.perf_counter()
        for _ in range(steps // 10):
            sim.step(10)
            v = sim.context.getState(getVelocities=True).getVelocities(asNumpy=True)._value
            kin.append(p.m * v[:, 2] ** 2)
        report(f"OpenMM {backend}", kin, steps, (time.perf_counter() - t0) / steps)


if __name__ == "__main__":
    main()
