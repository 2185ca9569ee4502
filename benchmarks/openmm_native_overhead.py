"""Native OpenMM plugin overhead: MD steps/s with ``MLPotForce`` (CPU platform) vs the bare exported model with
its neighbour list, same configuration; and the cost of committee statistics on report steps.

For fcc Cu supercells (fp64, periodic) and the shipped ``morse-cuau`` (pair potential) and ``cu-emt``
(message-passing committee) models it times, in this one run and in CPU time of the process:

* bare+NL: vesin-torch neighbour list + the model's ``compute`` (what a force evaluation has to do);
* native:  VerletIntegrator steps with the native MLPotForce (C++ cell list + ``compute`` through libtorch);
* native+unc (committees): the same with the committee statistics computed in every evaluation
  (``request_uncertainty(..., "always")``): what a report step costs.

Goals (issue 14): native / bare+NL <= 1.05; native+unc / native <= 1.1.

    nice -n 10 python benchmarks/openmm_native_overhead.py [--sizes 500 2048] [--threads 1]
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch  # before openmm
import openmm

from mlpot_plugins.openmm import native
from mlpot_plugins.openmm.ml_region import resolve_region
from mlpot_plugins.openmm.model_loading import load_for_openmm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from openmm_overhead import bare_callables, cpu_context, cu_supercell, stepper, time_per_call  # noqa: E402


def native_stepper(atoms, model: str, threads: int, uncertainty: bool):
    loaded = load_for_openmm(model)
    force = native.create_native_force(loaded, resolve_region(loaded.species, ["Cu"] * len(atoms), None, True))
    tag = native.native_force_info(force)["tag"]
    integrator, ctx = cpu_context(atoms, force, threads)
    if uncertainty:
        native.request_uncertainty(tag, ctx, "always")
    return stepper(integrator, ctx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["morse-cuau", "cu-emt"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2048])
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenMM CPU threads")
    parser.add_argument("--min-time", type=float, default=1.0, help="CPU seconds per measurement and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best is kept")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ok, why = native.native_available()
    if not ok:
        raise SystemExit(why)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, openmm {openmm.__version__}, "
          f"{args.threads} thread(s), fp64, CPU platform")
    print(f"{'model':>11} {'atoms':>6} {'edges':>8} {'bare+NL':>8} {'native':>8} {'nat+unc':>8}   "
          f"{'native/bare+NL':>14} {'unc/native':>10}")
    for model in args.models:
        committee = load_for_openmm(model).ensemble_size > 1
        for n in args.sizes:
            atoms = cu_supercell(n)
            _, nl_and_compute, _, edges = bare_callables(atoms, model)
            fns = [nl_and_compute, native_stepper(atoms, model, args.threads, False)]
            if committee:
                fns.append(native_stepper(atoms, model, args.threads, True))
            best = [time_per_call(fn, args.min_time) for fn in fns]
            for _ in range(args.rounds - 1):
                best = [min(b, time_per_call(fn, args.min_time)) for b, fn in zip(best, fns)]
            t_nl, t_nat = best[:2]
            t_unc = best[2] if committee else float("nan")
            print(f"{model:>11} {len(atoms):6d} {edges:8d} {1 / t_nl:8.2f} {1 / t_nat:8.2f} {1 / t_unc:8.2f}   "
                  f"{t_nat / t_nl:14.3f} {t_unc / t_nat:10.3f}", flush=True)
    print("(columns 4-6: evaluations or MD steps per CPU second; ratios of CPU time per call)")


if __name__ == "__main__":
    main()
