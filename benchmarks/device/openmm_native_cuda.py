"""One GPU session for the native OpenMM plugin (openmm/, mlpot_plugins/openmm/native.py).

    python benchmarks/device/openmm_native_cuda.py OUT_DIR [--sizes 1000 10000 100000] [--platform CUDA]

1. builds the plugin against the machine's OpenMM and torch (the CUDA kernel only where OpenMM's CUDA platform,
   a CUDA toolkit's headers and a CUDA torch are present: ``native.cuda_problem()`` is printed otherwise);
2. compares the platform with OpenMM's Reference platform for ``morse-cuau-committee`` and ``cu-emt`` on a
   small periodic Cu system (fp64: 1e-10 relative, fp32: 1e-5) and the committee statistics of the same call;
3. times MD steps (VerletIntegrator, fp64 and fp32 models) of ``cu-emt`` at ``--sizes`` atoms.
``--platform CPU`` tries the script out without a GPU. Prints one JSON line per measurement; everything also
goes to OUT_DIR/openmm_native_cuda.json.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch  # before openmm
import openmm
from ase.build import bulk

from mlpot_plugins import units
from mlpot_plugins.openmm import native
from mlpot_plugins.openmm.ml_region import resolve_region
from mlpot_plugins.openmm.model_loading import load_for_openmm

results = []


def emit(**rec):
    results.append(rec)
    print(json.dumps(rec), flush=True)


def cu_system(n_target: int):
    reps = max(1, round((n_target / 4) ** (1 / 3)))
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((reps,) * 3)
    atoms.rattle(0.05, seed=0)
    return atoms


def context(atoms, model, dtype, platform, uncertainty=False):
    system = openmm.System()
    for m in atoms.get_masses():
        system.addParticle(m)
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*v) for v in atoms.cell.array * units.NM_PER_ANGSTROM])
    loaded = load_for_openmm(model, "cpu", dtype)
    force = native.create_native_force(loaded, resolve_region(loaded.species, ["Cu"] * len(atoms), None, True))
    tag = native.native_force_info(force)["tag"]
    system.addForce(force)
    props = {"Precision": "double"} if platform == "CUDA" else {}
    integrator = openmm.VerletIntegrator(0.001)
    ctx = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform), props)
    ctx.setPositions(atoms.positions * units.NM_PER_ANGSTROM)
    if uncertainty:
        native.request_uncertainty(tag, ctx, "always")
    return ctx, integrator, tag


def energy_forces(ctx):
    st = ctx.getState(getEnergy=True, getForces=True)
    return st.getPotentialEnergy()._value, st.getForces(asNumpy=True)._value


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--platform", default="CUDA")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    emit(what="versions", torch=torch.__version__, openmm=openmm.__version__, cuda=torch.cuda.is_available(),
         cuda_kernel_problem=native.cuda_problem())
    ok, why = native.native_available()
    emit(what="plugin", ok=ok, why=why,
         platforms=[openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())])
    if not ok:
        sys.exit(1)
    atoms = cu_system(108)
    for model in ("morse-cuau-committee", "cu-emt"):
        for dtype, tol in (("float64", 1e-10), ("float32", 1e-5)):
            try:
                ref_ctx, _, ref_tag = context(atoms, model, dtype, "Reference", uncertainty=True)
                ctx, _, tag = context(atoms, model, dtype, args.platform, uncertainty=True)
                (e0, f0), (e, f) = energy_forces(ref_ctx), energy_forces(ctx)
                u0 = native.read_uncertainty(ref_tag, ref_ctx, len(atoms))
                u = native.read_uncertainty(tag, ctx, len(atoms))
                de, df = abs(e - e0) / abs(e0), float(np.abs(f - f0).max() / np.abs(f0).max())
                dstd = float(np.abs(u["forces_std"] - u0["forces_std"]).max() / u0["forces_std"].max())
                emit(what="agreement", model=model, dtype=dtype, platform=args.platform, energy_rel=de, force_rel=df,
                     forces_std_rel=dstd, ok=bool(de < tol and df < tol and dstd < tol))
            except Exception as exc:  # noqa: BLE001 (recorded; the session goes on)
                emit(what="agreement", model=model, dtype=dtype, error=f"{type(exc).__name__}: {exc}")
    for n in args.sizes:
        atoms = cu_system(n)
        for dtype in ("float64", "float32"):
            try:
                ctx, integ, _ = context(atoms, "cu-emt", dtype, args.platform)
                ctx.setVelocitiesToTemperature(300, 1)
                integ.step(5)
                ctx.getState(getEnergy=True)
                t0 = time.perf_counter()
                integ.step(args.steps)
                ctx.getState(getEnergy=True)
                dt = (time.perf_counter() - t0) / args.steps
                emit(what="md", model="cu-emt", dtype=dtype, atoms=len(atoms), s_per_step=dt,
                     ns_per_day=86400 * 1e-6 / dt, platform=args.platform)
                del ctx, integ
            except Exception as exc:  # noqa: BLE001
                emit(what="md", atoms=len(atoms), dtype=dtype, error=f"{type(exc).__name__}: {exc}")
    (args.out / "openmm_native_cuda.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
