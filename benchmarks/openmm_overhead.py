"""OpenMM overhead: MD steps/s with the model as a Force vs the bare exported model, same configuration.

For fcc Cu supercells of about 500-5000 atoms (shipped ``morse-cuau`` and the equivariant ``cu-emt``
committee, fp64, periodic; ``--models``) it times

* bare compute:   the exported model's ``compute`` on a precomputed neighbour list;
* bare NL+compute: vesin-torch neighbour list + ``compute`` (all a force evaluation has to do);
* wrapper:        the scripted module the TorchForce runs, called from Python (nm in, kJ/mol out),
                  so torch/wrapper is OpenMM's own per-step cost (integration, copies, dispatch);
* OpenMM <backend>: VerletIntegrator steps, CPU platform, for every available backend (native, torch
                  = TorchForce, python = PythonForce);
* report step:    (``--report``, committee models) python backend, an ``UncertaintyReporter`` of the same
                  committee reporting every step / no reporter: the cost of same-call uncertainty
                  (goal <= 1.1);

and prints steps/s and the ratios (time per OpenMM step / time per bare evaluation), all measured
in this one run. Times are this process's CPU time (``time.process_time``, all its threads; torch and
OpenMM use ``--threads``), which other jobs on a shared machine barely disturb, unlike wall time; the
five are timed in turn, ``--rounds`` times, each keeping its best round. Goal: TorchForce step <= 1.05 x
bare NL+compute, for each backend.

    nice -n 10 python benchmarks/openmm_overhead.py [--sizes 500 2048 4000] [--threads 1] [--models ...]
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
from mlpot_plugins.openmm import available_backends, create_force

MODELS = ("morse-cuau", "cu-emt")


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


def bare_callables(atoms, name):
    model = mlpot_plugins.load(name)
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


def openmm_stepper(atoms, backend: str, threads: int, name: str):
    return stepper(*cpu_context(atoms, create_force(name, ["Cu"] * len(atoms), backend=backend, periodic=True),
                                threads))


def report_step_ratio(atoms, name: str, threads: int, min_time: float, rounds: int) -> float:
    """python backend: CPU time of a step with the committee's UncertaintyReporter every step / without."""
    import io

    import openmm.app as app

    from mlpot_plugins.crystals import openmm_crystal
    from mlpot_plugins.openmm import UncertaintyReporter

    sims = []
    for with_reporter in (False, True):
        top, system = openmm_crystal(atoms)
        system.addForce(create_force(name, top, backend="python"))
        sim = app.Simulation(top, system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"),
                             {"Threads": str(threads)})
        sim.context.setPositions(atoms.positions * units.NM_PER_ANGSTROM)
        if with_reporter:
            rep = UncertaintyReporter(name, io.StringIO(), 1)
            sim.reporters.append(rep)
        sims.append(sim)
    fns = [lambda sim=sim: sim.step(1) for sim in sims]
    best = [time_per_call(fn, min_time) for fn in fns]
    for _ in range(rounds - 1):
        best = [min(b, time_per_call(fn, min_time)) for b, fn in zip(best, fns)]
    assert rep.same_call, "the reporter did not take the driving call's statistics"
    return best[1] / best[0]


def stats_cost_ratio(atoms, name: str, min_time: float, rounds: int) -> float:
    """The model's own price of the statistics: wrapper call with need_uncertainty / without."""
    from mlpot_plugins.openmm.torch_module import OpenMMModelWrapper

    model = mlpot_plugins.load(name)
    types = torch.zeros(len(atoms), dtype=torch.int64)
    wrapper = torch.jit.script(OpenMMModelWrapper(model.module, types, None, model.cutoff, True, model.dtype))
    pos = torch.as_tensor(atoms.positions * units.NM_PER_ANGSTROM)
    cell = torch.as_tensor(atoms.cell.array * units.NM_PER_ANGSTROM)
    fns = [lambda: wrapper(pos, cell, False), lambda: wrapper(pos, cell, True)]
    best = [time_per_call(fn, min_time) for fn in fns]
    for _ in range(rounds - 1):
        best = [min(b, time_per_call(fn, min_time)) for b, fn in zip(best, fns)]
    return best[1] / best[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2048, 4000])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--backends", nargs="+", default=None, help="default: every available one")
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenMM CPU threads")
    parser.add_argument("--min-time", type=float, default=1.5, help="CPU seconds per measurement and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best is kept")
    parser.add_argument("--no-report", dest="report", action="store_false", help="skip the report-step ratio")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    backends = args.backends or available_backends()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, openmm "
          f"{openmm.__version__}, {args.threads} thread(s), fp64, CPU platform, backends {backends}")
    head = f"{'model':>12} {'atoms':>6} {'edges':>8} {'bare':>8} {'bare+NL':>8} {'wrapper':>8} " + \
        " ".join(f"{b:>8}" for b in backends) + "   " + " ".join(f"{b + '/bare+NL':>15}" for b in backends)
    print(head + (f" {'report/step':>11} {'stats/plain':>11}" if args.report else ""))
    for name in args.models:
        # the report-step ratio needs a committee: the model itself, or its shipped "-committee" twin
        committee = name if mlpot_plugins.load(name).metadata["ensemble_size"] > 1 else (
            name + "-committee" if name + "-committee" in mlpot_plugins.pretrained_names() else None)
        for n in args.sizes:
            atoms = cu_supercell(n)
            compute_only, nl_and_compute, wrapped, edges = bare_callables(atoms, name)
            fns = [compute_only, nl_and_compute, wrapped] + [openmm_stepper(atoms, b, args.threads, name)
                                                             for b in backends]
            best = [time_per_call(fn, args.min_time) for fn in fns]
            for _ in range(args.rounds - 1):
                best = [min(b, time_per_call(fn, args.min_time)) for b, fn in zip(best, fns)]
            t_compute, t_nl, t_wrap, *t_backends = best
            line = (f"{name:>12} {len(atoms):6d} {edges:8d} {1 / t_compute:8.2f} {1 / t_nl:8.2f} {1 / t_wrap:8.2f} "
                    + " ".join(f"{1 / t:8.2f}" for t in t_backends) + "   "
                    + " ".join(f"{t / t_nl:15.3f}" for t in t_backends))
            if args.report:
                ratio = (report_step_ratio(atoms, committee, args.threads, args.min_time, args.rounds)
                         if committee and "python" in backends else float("nan"))
                intrinsic = (stats_cost_ratio(atoms, committee, args.min_time, args.rounds)
                             if committee else float("nan"))
                line += f" {ratio:11.3f} {intrinsic:11.3f}"
            print(line, flush=True)
    print("(columns bare..backends: evaluations or MD steps per CPU second; ratios: CPU time per call over CPU "
          "time per call; report/step: python backend, step with the committee reporter every step / without, "
          "for morse-cuau its committee morse-cuau-committee; stats/plain: that committee's own call with the "
          "statistics / without, the least a report step can cost)")


if __name__ == "__main__":
    main()
