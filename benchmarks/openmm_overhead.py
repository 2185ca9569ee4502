"""OpenMM overhead: MD steps/s with the model as a Force vs the bare exported model, same configuration.

For fcc Cu supercells of about 500-5000 atoms (shipped ``morse-cuau``, fp64, periodic) it times

* bare compute:   the exported model's ``compute`` on a precomputed neighbour list;
* bare NL+compute: vesin-torch neighbour list + ``compute`` (all a force evaluation has to do);
* wrapper:        the scripted module the TorchForce runs, called from Python (nm in, kJ/mol out),
                  so torch/wrapper is OpenMM's own per-step cost (integration, copies, dispatch);
* OpenMM torch:   VerletIntegrator steps, TorchForce backend, CPU platform;
* OpenMM python:  the same with the PythonForce backend;

and prints steps/s and the ratios (time per OpenMM step / time per bare evaluation), all measured
in this one run. Times are this process's CPU time (``time.process_time``, all its threads; torch and
OpenMM use ``--threads``), which other jobs on a shared machine barely disturb, unlike wall time; the
five are timed in turn, ``--rounds`` times, each keeping its best round. Goal: TorchForce step <= 1.05 x
bare NL+compute.

    nice -n 10 python benchmarks/openmm_overhead.py [--sizes 500 2048 4000] [--threads 1]
"""
from __future__ import annotations

import argparse
import platform
import time

import torch  # before openmm/openmmtorch
import openmm
from ase.build import bulk
from vesin.torch import NeighborList

import mlpot_plugins
from mlpot_plugins import units
from mlpot_plugins.openmm import create_force

MODEL = "morse-cuau"


def cu_supercell(n_target: int):
    reps = max(1, round((n_target / 4) ** (1 / 3)))
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((reps,) * 3)
    atoms.rattle(0.05, seed=0)
    return atoms


def time_per_call(fn, min_time: float, min_calls: int = 3) -> float:
    fn()  # warm-up (TorchScript profiling runs, allocator)
    fn()
    calls, t0 = 0, time.process_time()
    while calls < min_calls or time.process_time() - t0 < min_time:
        fn()
        calls += 1
    return (time.process_time() - t0) / calls


def bare_callables(atoms, model_name: str = MODEL):
    model = mlpot_plugins.load(model_name)
    dt = model.dtype
    pos = torch.as_tensor(atoms.positions, dtype=dt)
    cell = torch.as_tensor(atoms.cell.array, dtype=dt)
    types = torch.zeros(len(atoms), dtype=torch.int64)

    def neighbours():
        i, j, s = NeighborList(cutoff=model.cutoff, full_list=True).compute(pos, cell, True, "ijS")
        return torch.stack([i, j]).to(torch.int64), s.to(dt) @ cell

    edge_index, shifts = neighbours()

    def compute_only():
        model.compute(pos, types, edge_index, shifts, need_virial=False)

    def nl_and_compute():
        ei, sh = neighbours()
        model.compute(pos, types, ei, sh, need_virial=False)

    from mlpot_plugins.openmm.torch_module import OpenMMModelWrapper

    wrapper = torch.jit.script(OpenMMModelWrapper(model.module, types, None, model.cutoff, True, dt))
    pos_nm, cell_nm = pos * units.NM_PER_ANGSTROM, cell * units.NM_PER_ANGSTROM

    def wrapped():
        wrapper(pos_nm, cell_nm)

    return compute_only, nl_and_compute, wrapped, edge_index.shape[1]


def cpu_context(atoms, force, threads: int):
    """(integrator, Context) of a periodic System of ``atoms`` holding ``force``, CPU platform, 300 K."""
    system = openmm.System()
    for m in atoms.get_masses():
        system.addParticle(m)
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*v) for v in atoms.cell.array * units.NM_PER_ANGSTROM])
    system.addForce(force)
    integrator = openmm.VerletIntegrator(0.001)
    ctx = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"), {"Threads": str(threads)})
    ctx.setPositions(atoms.positions * units.NM_PER_ANGSTROM)
    ctx.setVelocitiesToTemperature(300, 1)
    return integrator, ctx


def stepper(integrator, ctx):
    """One MD step per call."""
    def step():
        integrator.step(1)
        return ctx  # the closure keeps the Context alive

    return step


def openmm_stepper(atoms, backend: str, threads: int):
    return stepper(*cpu_context(atoms, create_force(MODEL, ["Cu"] * len(atoms), backend=backend, periodic=True),
                                threads))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2048, 4000])
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenMM CPU threads")
    parser.add_argument("--min-time", type=float, default=1.5, help="CPU seconds per measurement and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best is kept")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, openmm "
          f"{openmm.__version__}, {args.threads} thread(s), model {MODEL} (fp64), CPU platform")
    print(f"{'atoms':>6} {'edges':>8} {'bare':>8} {'bare+NL':>8} {'wrapper':>8} {'torch':>8} {'python':>8}   "
          f"{'torch/bare+NL':>13} {'python/bare+NL':>14} {'torch/wrapper':>13} {'torch/bare':>10}")
    for n in args.sizes:
        atoms = cu_supercell(n)
        compute_only, nl_and_compute, wrapped, edges = bare_callables(atoms)
        fns = [compute_only, nl_and_compute, wrapped, openmm_stepper(atoms, "torch", args.threads),
               openmm_stepper(atoms, "python", args.threads)]
        best = [time_per_call(fn, args.min_time) for fn in fns]
        for _ in range(args.rounds - 1):
            best = [min(b, time_per_call(fn, args.min_time)) for b, fn in zip(best, fns)]
        t_compute, t_nl, t_wrap, t_torch, t_python = best
        print(f"{len(atoms):6d} {edges:8d} {1 / t_compute:8.2f} {1 / t_nl:8.2f} {1 / t_wrap:8.2f} "
              f"{1 / t_torch:8.2f} {1 / t_python:8.2f}   {t_torch / t_nl:13.3f} {t_python / t_nl:14.3f} "
              f"{t_torch / t_wrap:13.3f} {t_torch / t_compute:10.3f}", flush=True)
    print("(columns 3-7: evaluations or MD steps per CPU second; ratios: CPU time per call over CPU time per call)")


if __name__ == "__main__":
    main()
