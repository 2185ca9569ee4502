"""Cost of a `mlpot committee` file vs its members run one after the other, per MD step on CPU.

Three separately exported Cu models with different cutoffs (two equivariant single models, cutoffs 4.0 and
4.5 A, seeds 0/1; a Morse pair model, cutoff 5 A) on a rattled 108-atom fcc Cu cell. Times the exported
``compute`` (energy, forces, virial; with and without uncertainty) of the committee, fed edges at its cutoff,
against the sum of the members, each fed edges at its own cutoff; neighbour lists are built outside the
timing. ``python benchmarks/committee_of_files_cost.py [--threads 1] [--repeats 30]``
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk

from mlpot_plugins import export, load
from mlpot_plugins.committee import make_committee
from mlpot_plugins.models.equivariant import EquivariantPotential
from mlpot_plugins.models.reference import MorsePotential
from mlpot_plugins.neighbors import neighbor_list

from committee_cost import step_time  # benchmarks/ is on sys.path when run as a script


def inputs(atoms, cutoff):
    ei, sh = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    return (torch.tensor(atoms.positions), torch.zeros(len(atoms), dtype=torch.long), torch.tensor(ei),
            torch.tensor(sh))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=30)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    atoms.positions += np.random.default_rng(0).normal(0, 0.05, atoms.positions.shape)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = []
        for k, cutoff in enumerate((4.0, 4.5)):
            torch.manual_seed(k)
            paths.append(export(EquivariantPotential(species=["Cu"], cutoff=cutoff, channels=12, readout_hidden=12,
                                                     dtype="float64"), tmp / f"eq{k}.pt"))
        paths.append(export(MorsePotential(["Cu"], cutoff=5.0), tmp / "morse.pt"))
        members = [load(p) for p in paths]
        committee = load(make_committee(paths, tmp / "committee.pt"))
        member_t = [step_time(m, inputs(atoms, m.cutoff), a.repeats, False) for m in members]
        c_args = inputs(atoms, committee.cutoff)
        drive = step_time(committee, c_args, a.repeats, False)
        unc = step_time(committee, c_args, a.repeats, True)
    total = sum(member_t)
    print(f"{len(atoms)} Cu atoms, {a.threads} thread(s), median of {a.repeats} calls (energy+forces+virial)")
    for p, t in zip(paths, member_t):
        print(f"  member {p.name:10s} {t * 1e3:8.2f} ms")
    print(f"  sum of members   {total * 1e3:8.2f} ms")
    print(f"  committee        {drive * 1e3:8.2f} ms ({drive / total:.2f}x the sum); with uncertainty "
          f"{unc * 1e3:8.2f} ms ({unc / total:.2f}x)")


if __name__ == "__main__":
    main()
