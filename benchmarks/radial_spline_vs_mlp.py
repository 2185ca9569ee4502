"""Spline radial functions (Facet) vs radial MLP: accuracy after the same training and speed per step.

Trains two otherwise identical single models (K=1) on the same deterministic EMT Cu subset for the same
number of epochs and reports validation force RMSE, then times exported ``compute`` on a 108-atom cell.
``python benchmarks/radial_spline_vs_mlp.py [--epochs 8] [--structures 80]``
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk

from mlpot_plugins import export, load
from mlpot_plugins.emt_data import generate
from mlpot_plugins.models.equivariant import EquivariantPotential
from mlpot_plugins.neighbors import neighbor_list
from mlpot_plugins.training.dataset import species_statistics, split, to_structures
from mlpot_plugins.training.train import TRAINING_DEFAULTS, accuracy, predict, structure_loss


def train(radial, n_basis, train_set, val_set, epochs, channels, cutoff, avg_nb, shift, scale):
    torch.manual_seed(0)
    model = EquivariantPotential(species=["Cu"], cutoff=cutoff, channels=channels, radial=radial, n_basis=n_basis,
                                 avg_num_neighbors=avg_nb, dtype="float32", seed=0)
    model.set_species_stats(torch.as_tensor(shift), torch.as_tensor(scale))
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    tc = dict(TRAINING_DEFAULTS)
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(train_set), generator=gen).tolist()
        for b in range(0, len(order), 4):
            opt.zero_grad()
            for i in order[b:b + 4]:
                (structure_loss(model, train_set[i], tc)["total"] / 4).backward()
            opt.step()
    train_minutes = (time.perf_counter() - t0) / 60
    return model, accuracy(predict(model, val_set))["force_rmse"], train_minutes


def radial_only_time(model, repeats, n_edges=4 * 1944):
    """Forward + backward of basis and radial weights of both layers for K x E edges (float64)."""
    r = torch.linspace(1.8, model.cutoff, n_edges, dtype=torch.float64).reshape(1, -1).requires_grad_(True)
    ts = []
    for i in range(repeats + 3):
        t0 = time.perf_counter()
        basis = model.basis(r)
        out = sum(layer.radial(basis).sum() for layer in model.layers)
        torch.autograd.grad(out, r)
        if i >= 3:
            ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--structures", type=int, default=80)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--cutoff", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--variants", default="spline:8,spline:16,mlp:8", help="radial:n_basis,...")
    a = ap.parse_args()
    torch.set_num_threads(1)
    frames = generate("Cu", "train", seed=0)
    frames = [frames[i] for i in np.random.default_rng(0).permutation(len(frames))[:a.structures]]
    structures = to_structures(frames, ["Cu"], a.cutoff, torch.float32)
    train_set, val_set = split(structures, 0.25, 0)
    shift, scale, avg_nb = species_statistics(train_set, 1)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    atoms.positions += np.random.default_rng(0).normal(0, 0.05, atoms.positions.shape)
    ei, sh = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, a.cutoff)
    args = (torch.tensor(atoms.positions), torch.zeros(len(atoms), dtype=torch.long), torch.tensor(ei),
            torch.tensor(sh))
    print(f"{len(train_set)} train / {len(val_set)} val EMT Cu structures, {a.epochs} epochs, channels "
          f"{a.channels}, cutoff {a.cutoff} A, K=1; timing: 108 atoms, float64, 1 thread")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in a.variants.split(","):
            radial, n_basis = variant.split(":")
            model, rmse, minutes = train(radial, int(n_basis), train_set, val_set, a.epochs, a.channels, a.cutoff,
                                         avg_nb, shift, scale)
            loaded = load(export(model.to(torch.float64), Path(tmp) / f"{radial}.pt"))
            for _ in range(3):
                loaded.compute(*args)
            ts = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                loaded.compute(*args)
                ts.append(time.perf_counter() - t0)
            n_radial = sum(p.numel() for n, p in model.named_parameters() if "radial" in n)
            rows[variant] = (rmse, float(np.median(ts)), minutes, n_radial, radial_only_time(model, a.repeats))
    for radial, (rmse, t, minutes, n_radial, t_rad) in rows.items():
        print(f"  {radial:9s} val force RMSE {rmse:.4f} eV/A   {t * 1e3:7.1f} ms/step   radial functions alone "
              f"{t_rad * 1e3:6.2f} ms   training {minutes:.1f} min   radial parameters {n_radial}")
    base = [v for v in rows if v.startswith("mlp")]
    if base:
        r_m, t_m, _, _, tr_m = rows[base[0]]
        for v, (r, t, _, _, tr) in rows.items():
            if v.startswith("spline"):
                print(f"  {v} / {base[0]}: force RMSE ratio {r / r_m:.3f}, step time ratio {t / t_m:.3f}, "
                      f"radial-function time ratio {tr / tr_m:.3f}")


if __name__ == "__main__":
    main()
