"""Cost of a K=4 committee evaluated in one batched pass vs a single member, per MD step on CPU.

Times the exported (TorchScript) ``compute`` with forces, virial and uncertainty on a 108-atom Cu cell, for
K=1, K=4 batched, K=4 shallow ensemble, and 4 sequential single models; prints the ratios measured in this
run. ``python benchmarks/committee_cost.py [--threads 1] [--repeats 30] [--channels 12]``

``--members 1 2 4 8 [--cell 6] [--rounds 5]``: instead, how a committee's step (forces, virial, every member's
forces for the uncertainty) grows with its size K on a bigger cell (cubic repeats; 6 = 864 atoms): each round
times every K once, in turn, and the median over rounds of cost(K) / cost(1) is printed (issue 12 measured
K = 8 at 15x one member before the allocator and kernel changes).
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk

from mlpot_plugins import export, load
from mlpot_plugins.models.equivariant import EquivariantPotential
from mlpot_plugins.neighbors import neighbor_list


def step_time(model, args, repeats, need_uncertainty):
    for _ in range(3):
        model.compute(*args, need_virial=True, need_uncertainty=need_uncertainty)
    best = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.compute(*args, need_virial=True, need_uncertainty=need_uncertainty)
        best.append(time.perf_counter() - t0)
    return float(np.median(best))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--channels", type=int, default=12)
    ap.add_argument("--cutoff", type=float, default=4.0)
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--n-basis", type=int, default=16, help="spline knots (cu-emt uses 16)")
    ap.add_argument("--members", type=int, nargs="+", help="committee sizes K for the growth measurement")
    ap.add_argument("--cell", type=int, default=6, help="cubic repeats of the fcc cell for --members")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds for --members")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.members:
        from mlpot_plugins.engine_setup import engine_setup

        engine_setup(a.threads)  # the allocator setting every engine applies
        growth(a)
        return
    for repeat in (2, 3):
        measure(a, repeat)


def inputs(a, repeat):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    atoms.positions += np.random.default_rng(0).normal(0, 0.05, atoms.positions.shape)
    ei, sh = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, a.cutoff)
    dt = getattr(torch, a.dtype)
    args = (torch.tensor(atoms.positions, dtype=dt), torch.zeros(len(atoms), dtype=torch.long), torch.tensor(ei),
            torch.tensor(sh, dtype=dt))
    hp = dict(species=["Cu"], cutoff=a.cutoff, channels=a.channels, readout_hidden=a.channels, dtype=a.dtype,
              n_basis=a.n_basis)
    return atoms, ei, args, hp


def growth(a):
    atoms, ei, args, hp = inputs(a, a.cell)
    with tempfile.TemporaryDirectory() as tmp:
        models = {k: load(export(EquivariantPotential(**hp, ensemble_size=k), Path(tmp) / f"k{k}.pt"))
                  for k in a.members}
        ratios = {k: [] for k in a.members}
        for _ in range(a.rounds):
            t = {k: step_time(m, args, 3, True) for k, m in models.items()}
            base = t[a.members[0]]
            for k in a.members:
                ratios[k].append(t[k] / base)
            print("  round: " + ", ".join(f"K={k} {t[k] * 1e3:.0f} ms" for k in a.members), flush=True)
    print(f"{len(atoms)} Cu atoms, {ei.shape[1]} edges, channels {a.channels}, lmax 2, 2 layers, {a.dtype}, "
          f"{a.threads} thread(s); uncertainty step (forces of every member); median of {a.rounds} rounds")
    for k in a.members:
        r = float(np.median(ratios[k]))
        print(f"  K={k:2d}: {r:5.2f}x K={a.members[0]}  ({r / k * a.members[0]:.2f} per member)")


def measure(a, repeat):
    atoms, ei, args, hp = inputs(a, repeat)
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, kw in (("single member (K=1)", dict(ensemble_size=1)),
                          ("committee K=4, one batched pass", dict(ensemble_size=4)),
                          ("shallow ensemble K=4 (shared trunk)", dict(ensemble_size=4, ensemble="shallow"))):
            model = load(export(EquivariantPotential(**hp, **kw), Path(tmp) / "m.pt"))
            # MD steps drive with the mean force; uncertainty steps also need every member's forces
            times[label] = (step_time(model, args, a.repeats, False), step_time(model, args, a.repeats, True))
    single = times["single member (K=1)"][0]
    times["4 sequential single members"] = (4 * single, 4 * single)
    print(f"{len(atoms)} Cu atoms, {ei.shape[1]} edges, channels {a.channels}, lmax 2, 2 layers, {a.dtype}, "
          f"{a.n_basis} spline knots, {a.threads} thread(s), median of {a.repeats} steps (energy+forces+virial)")
    print(f"  {'':38s} {'driving step':>22s} {'uncertainty step':>24s}   (ratio to single member)")
    for label, (drive, unc) in times.items():
        print(f"  {label:38s} {drive * 1e3:8.1f} ms ({drive / single:5.2f}x)   {unc * 1e3:8.1f} ms ({unc / single:5.2f}x)")


if __name__ == "__main__":
    main()
