"""OpenMM on a GPU, every available backend (native > torch > python): agreement with the CPU and ns/day.

    python benchmarks/device/openmm_cuda.py [OUT_DIR] [--wheels DIR] [--budget S] [--sizes N ...]

One short go on a CUDA machine that may have another torch (e.g. 2.11), no openmm-torch, no native plugin
and no internet. Every measurement is independent: a missing part (openmm, its CUDA platform, openmm-torch,
the native plugin, a GPU) or a failure is recorded with its reason and the rest goes on. Results are printed
as JSON lines and written to OUT_DIR/openmm_cuda.json after each measurement (OUT_DIR: argument, else $OUT,
else ./openmm_cuda_out).

1. environment: torch / CUDA / openmm versions, OpenMM platforms and plugin load failures, each backend's
   availability and reason;
2. agreement: energy and forces on the CUDA platform vs the CPU platform, per backend, cu-emt and the
   Morse committee, periodic cubic, triclinic and cluster systems, fp64 (goal 1e-10 relative to the largest
   force) and fp32 (goal 1e-5);
3. ns/day (1 fs VerletIntegrator steps, fp32 model, CUDA platform "mixed") for cu-emt fcc Cu at 1k-100k
   atoms, per backend; the python backend's host copies (positions to the GPU, forces back) per step;
4. a 5k-atom ML/MM system (fcc Cu, Lennard-Jones MM everywhere, a ~500-atom cu-emt ML sphere through
   openmm-ml's mechanical embedding), ns/day per backend;
5. same-call uncertainty: step time with the committee reporter every step vs none (python backend).

If ``import openmm`` fails, the wheels in ``--wheels DIR`` (e.g. ``openmm-8.6.1-*.whl`` and
``openmm_cuda_13-*.whl`` brought along) are unpacked into OUT_DIR/site and put on ``sys.path``.
``--platform CPU --device cpu --sizes 256`` tries the whole script out on a machine without a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import zipfile
from pathlib import Path

import numpy as np

results: dict = {}
OUT: Path = Path(".")
T0 = time.perf_counter()


def report(key, value):
    results[key] = value
    print(json.dumps({key: value}, default=str), flush=True)
    (OUT / "openmm_cuda.json").write_text(json.dumps(results, indent=1, default=str))


def attempt(key, fn, *args, **kw):
    """Run one measurement; record its result or its error (never stop the script)."""
    try:
        report(key, fn(*args, **kw))
    except Exception as exc:  # noqa: BLE001
        report(key, {"error": f"{type(exc).__name__}: {exc}"[:2000],
                     "where": traceback.format_exc().splitlines()[-3:]})


def ensure_openmm(wheels: str | None) -> None:
    try:
        import openmm  # noqa: F401
        return
    except ImportError as exc:
        if not wheels:
            raise ImportError(f"openmm is not installed and no --wheels folder was given ({exc})") from None
    site = OUT / "site"
    site.mkdir(parents=True, exist_ok=True)
    for whl in sorted(Path(wheels).glob("*.whl")):
        with zipfile.ZipFile(whl) as z:
            z.extractall(site)
    for so in site.rglob("*.so*"):
        so.chmod(0o755)
    sys.path.insert(0, str(site))
    import openmm  # noqa: F401,F811


def environment(args):
    import torch
    import openmm

    from mlpot_plugins.openmm.backends import BACKENDS, backend_available

    plats = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    env = {"python": sys.version.split()[0], "torch": torch.__version__, "torch_cuda": torch.version.cuda,
           "cuda_available": torch.cuda.is_available(),
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "openmm": openmm.__version__, "platforms": plats,
           "plugin_load_failures": list(openmm.Platform.getPluginLoadFailures()),
           "backends": {b: list(backend_available(b)) for b in BACKENDS}}
    return env


# ---------------------------------------------------------------------------------------------------------
def crystal(n_target: int, a: float = 3.61, rattle: float = 0.05, seed: int = 0):
    from ase.build import bulk

    reps = max(1, round((n_target / 4) ** (1 / 3)))
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat((reps,) * 3)
    atoms.rattle(rattle, seed=seed)
    return atoms


def systems():
    from ase.build import bulk

    cubic = crystal(500)
    cubic.symbols[[1, 6, 13]] = "Au"
    tri = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((4, 4, 4))
    tri.set_cell(tri.cell.array + np.array([[0, 0, 0], [3.0, 0, 0], [-2.4, 3.6, 0]]), scale_atoms=True)
    tri.rattle(0.05, seed=2)
    clus = crystal(256, seed=3)
    clus.pbc = False
    clus.cell = np.zeros((3, 3))
    return {"periodic": cubic, "triclinic": tri, "cluster": clus}


def topology_system(atoms):
    """(Topology, System without forces); periodic only when the atoms are."""
    import openmm

    from mlpot_plugins.crystals import openmm_crystal

    if atoms.pbc.any():
        return openmm_crystal(atoms)
    import openmm.app as app

    top = app.Topology()
    chain = top.addChain()
    system = openmm.System()
    for s in atoms.get_chemical_symbols():
        el = app.Element.getBySymbol(s)
        top.addAtom(s, el, top.addResidue(s, chain))
        system.addParticle(el.mass)
    return top, system


def context(atoms, model, backend, platform, device, dtype, precision=None, threads=None):
    import openmm

    from mlpot_plugins.openmm import create_force

    top, system = topology_system(atoms)
    force = create_force(model, top, backend=backend, device=device, dtype=dtype)
    system.addForce(force)
    props = {}
    if platform in ("CUDA", "OpenCL", "HIP") and precision:
        props["Precision"] = precision
    if platform == "CPU" and threads:
        props["Threads"] = str(threads)
    integ = openmm.VerletIntegrator(0.001)
    ctx = openmm.Context(system, integ, openmm.Platform.getPlatformByName(platform), props)
    ctx.setPositions(atoms.positions * 0.1)
    return ctx, integ, force


def energy_forces(ctx):
    st = ctx.getState(getEnergy=True, getForces=True)
    return st.getPotentialEnergy()._value, np.asarray(st.getForces(asNumpy=True)._value)


def agreement(args, backend, model, name, atoms, dtype):
    """CUDA platform (model on the GPU) vs CPU platform (model on the CPU), same backend and dtype."""
    goal = 1e-10 if dtype == "float64" else 1e-5
    ctx_c, _, _ = context(atoms, model, backend, "CPU", "cpu", dtype)
    e_c, f_c = energy_forces(ctx_c)
    ctx_g, _, force = context(atoms, model, backend, args.platform, args.device, dtype,
                              precision="double" if dtype == "float64" else "mixed")
    e_g, f_g = energy_forces(ctx_g)
    scale = float(np.abs(f_c).max())
    df = float(np.abs(f_g - f_c).max()) / scale
    de = abs(e_g - e_c) / max(abs(e_c), 1e-300)
    return {"atoms": len(atoms), "energy_rel": de, "forces_rel_to_max": df, "goal": goal,
            "pass": bool(df <= goal and de <= goal), "backend_reason": getattr(force, "mlpot_backend_reason", "")}


def ns_per_day(args, backend, model, n, dtype="float32", steps=None):
    from mlpot_plugins.openmm.python_force import computations_of

    atoms = crystal(n)
    ctx, integ, force = context(atoms, model, backend, args.platform, args.device, dtype, precision="mixed",
                                threads=args.threads)
    ctx.setVelocitiesToTemperature(300, 1)
    integ.step(3)  # warm-up: TorchScript profiling runs, CUDA kernels, allocator
    comps = computations_of(ctx.getSystem().getForce(0)) if backend == "python" else []
    before = dict(comps[0].seconds) if comps else None
    evals0 = comps[0].evaluations if comps else 0
    steps = steps or 10
    t0 = time.perf_counter()
    done = 0
    while done < steps or time.perf_counter() - t0 < args.min_time:
        integ.step(1)
        done += 1
        if time.perf_counter() - t0 > args.max_time:
            break
    ctx.getState(getEnergy=True)  # finish queued GPU work
    dt = (time.perf_counter() - t0) / done
    out = {"atoms": len(atoms), "steps": done, "s_per_step": dt, "ns_per_day": 86400 / dt * 1e-6,
           "backend_reason": getattr(force, "mlpot_backend_reason", "")}
    if comps:
        evals = max(1, comps[0].evaluations - evals0)
        out["python_backend_per_eval_s"] = {k: (comps[0].seconds[k] - before[k]) / evals for k in before}
    return out


def mlmm(args, backend, n=5000, radius_A=12.0, dtype="float32"):
    """fcc Cu, LJ MM for all atoms, a cu-emt ML sphere (openmm-ml mechanical embedding)."""
    import openmm
    from openmmml import MLPotential

    from mlpot_plugins.crystals import openmm_crystal

    atoms = crystal(n)
    top, mm = openmm_crystal(atoms)
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    nb.setCutoffDistance(0.8)
    for _ in range(len(atoms)):
        nb.addParticle(0.0, 0.2338, 20.0)  # a Cu-like LJ (sigma 2.338 A, epsilon ~0.2 eV)
    mm.addForce(nb)
    centre = atoms.cell.array.sum(0) / 2
    ml_atoms = [int(i) for i in np.nonzero(np.linalg.norm(atoms.positions - centre, axis=1) < radius_A)[0]]
    pot = MLPotential("mlpot", modelPath="cu-emt")
    system = pot.createMixedSystem(top, mm, ml_atoms, backend=backend, device=args.device, dtype=dtype)
    integ = openmm.VerletIntegrator(0.001)
    props = {"Precision": "mixed"} if args.platform in ("CUDA", "OpenCL", "HIP") else {}
    ctx = openmm.Context(system, integ, openmm.Platform.getPlatformByName(args.platform), props)
    ctx.setPositions(atoms.positions * 0.1)
    ctx.setVelocitiesToTemperature(300, 1)
    integ.step(3)
    t0, done = time.perf_counter(), 0
    while done < 10 or time.perf_counter() - t0 < args.min_time:
        integ.step(1)
        done += 1
        if time.perf_counter() - t0 > args.max_time:
            break
    ctx.getState(getEnergy=True)
    dt = (time.perf_counter() - t0) / done
    return {"atoms": len(atoms), "ml_atoms": len(ml_atoms), "steps": done, "s_per_step": dt,
            "ns_per_day": 86400 / dt * 1e-6}


def same_call_cost(args, n=4000):
    """python backend + committee: step time with the uncertainty reporter every step / without."""
    import io

    import openmm
    import openmm.app as app

    from mlpot_plugins.crystals import openmm_crystal
    from mlpot_plugins.openmm import UncertaintyReporter, create_force

    atoms = crystal(n)
    times = {}
    for with_reporter in (False, True):
        top, system = openmm_crystal(atoms)
        system.addForce(create_force("morse-cuau-committee", top, backend="python", device=args.device))
        props = {"Precision": "double"} if args.platform in ("CUDA", "OpenCL", "HIP") else {}
        sim = app.Simulation(top, system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName(args.platform), props)
        sim.context.setPositions(atoms.positions * 0.1)
        if with_reporter:
            rep = UncertaintyReporter("morse-cuau-committee", io.StringIO(), 1, device=args.device)
            sim.reporters.append(rep)
        sim.step(3)
        t0 = time.perf_counter()
        sim.step(10)
        times[with_reporter] = (time.perf_counter() - t0) / 10
        if with_reporter:
            times["same_call"] = rep.same_call
    return {"atoms": len(atoms), "step_s": times[False], "report_every_step_s": times[True],
            "ratio": times[True] / times[False], "same_call": times["same_call"], "goal": 1.1}


# ---------------------------------------------------------------------------------------------------------
def main():
    global OUT
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", default=os.environ.get("OUT", "openmm_cuda_out"))
    p.add_argument("--wheels", help="folder of wheels (openmm, openmm-cuda-13, ...) to use if openmm is missing")
    p.add_argument("--platform", default="CUDA")
    p.add_argument("--device", default="cuda")
    p.add_argument("--threads", type=int, default=None, help="CPU platform threads (--platform CPU)")
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000, 32000, 64000, 100000])
    p.add_argument("--mlmm-atoms", type=int, default=5000)
    p.add_argument("--min-time", type=float, default=2.0, help="seconds per ns/day measurement, at least")
    p.add_argument("--max-time", type=float, default=20.0, help="seconds per ns/day measurement, at most")
    p.add_argument("--budget", type=float, default=420.0, help="stop starting measurements after this (s)")
    args = p.parse_args()
    OUT = Path(args.out)
    OUT.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    attempt("openmm_import", lambda: ensure_openmm(args.wheels) or "ok")
    if "error" in results["openmm_import"]:
        return
    import torch  # noqa: F401  (before openmm-torch)

    attempt("environment", environment, args)
    from mlpot_plugins.openmm.backends import available_backends

    backends = available_backends()
    report("backends_used", backends)

    def over_budget():
        return time.perf_counter() - T0 > args.budget

    for model in ("cu-emt", "morse-cuau-committee"):
        for name, atoms in systems().items():
            if model == "cu-emt" and atoms.get_chemical_symbols().count("Au"):
                atoms = atoms.copy()
                atoms.symbols[:] = "Cu"
            for dtype in ("float64", "float32"):
                for backend in backends:
                    attempt(f"agree/{model}/{name}/{dtype}/{backend}", agreement, args, backend, model, name,
                            atoms, dtype)
    for n in args.sizes:
        for backend in backends:
            if over_budget():
                report(f"nsday/cu-emt/{n}/{backend}", {"skipped": "time budget"})
                continue
            attempt(f"nsday/cu-emt/{n}/{backend}", ns_per_day, args, backend, "cu-emt", n)
    for backend in backends:
        if over_budget():
            report(f"mlmm/{backend}", {"skipped": "time budget"})
            continue
        attempt(f"mlmm/{backend}", mlmm, args, backend, args.mlmm_atoms)
    if "python" in backends and not over_budget():
        attempt("same_call_uncertainty", same_call_cost, args)
    report("total_s", time.perf_counter() - T0)


if __name__ == "__main__":
    main()
