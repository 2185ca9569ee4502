"""Two exported model files of the same model on the same atoms, call for call (e.g. a shipped file before and
after it was re-scripted with faster layer code).

Both files are loaded in this one process (one torch thread, the engines' allocator setting) and called
through the ASE calculator (energy, forces and virial, a driving step; with ``--uncertainty`` also the per-atom
committee std; a fresh neighbour list each call) on a rattled fcc
cell of the model's first species, alternating A, B, A, B, ... for ``--rounds`` rounds after one warm-up call
each. Reported per size: the median CPU time per call of each file and the median of the per-round ratios
A / B (this VM drifts by tens of per cent between minutes; adjacent calls see the same machine), and the largest
force difference between the two files.

``python benchmarks/model_file_speed.py OLD.pt NEW.pt [--sizes 6 8 10] [--rounds 5] [--dtype float32]
[--uncertainty]``
(``--sizes n``: 4 n^3 atoms of an fcc cubic cell with a = 3.61 A.)
"""
import argparse
import platform
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="model file A (e.g. the previous export)")
    ap.add_argument("b", help="model file B")
    ap.add_argument("--sizes", type=int, nargs="+", default=[6, 8, 10])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dtype", choices=["float64", "float32"], default=None,
                    help="convert both at load (default: each file's own dtype)")
    ap.add_argument("--uncertainty", action="store_true", help="ask for the per-atom std (forces_std) too")
    args = ap.parse_args()
    props = ["energy", "forces", "stress"] + (["forces_std"] if args.uncertainty else [])

    from ase.build import bulk

    from mlpot_plugins.ase import MLPotCalculator

    calcs = [MLPotCalculator(path, threads=1, dtype=args.dtype) for path in (args.a, args.b)]
    species = calcs[0].model.metadata["species"][0]
    print(f"# {platform.processor() or platform.machine()}, {args.rounds} alternating rounds, CPU time per call")
    print(f"# A = {args.a}\n# B = {args.b}\n# properties: {props}")
    print(f"{'atoms':>7} {'A s':>8} {'B s':>8} {'A/B':>6} {'max |dF|':>10}")
    for n in args.sizes:
        atoms = bulk(species, "fcc", a=3.61, cubic=True).repeat(n)
        atoms.positions += np.random.default_rng(0).normal(0.0, 0.05, atoms.positions.shape)

        def call(calc):
            calc.reset()
            t = time.process_time()
            calc.calculate(atoms, props)
            return time.process_time() - t, calc.results["forces"]

        forces = [call(calc)[1] for calc in calcs]  # warm-up
        times = np.zeros((args.rounds, 2))
        for r in range(args.rounds):
            for i, calc in enumerate(calcs):
                times[r, i] = call(calc)[0]
        ratio = float(np.median(times[:, 0] / times[:, 1]))
        med = np.median(times, axis=0)
        print(f"{len(atoms):7d} {med[0]:8.3f} {med[1]:8.3f} {ratio:6.2f} {np.abs(forces[0] - forces[1]).max():10.2e}",
              flush=True)


if __name__ == "__main__":
    main()
