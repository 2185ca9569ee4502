"""`mlpot demo` stage: bring your own model — separately exported models combined into one committee file
(`mlpot committee`), and a shipped committee exported to metatomic and run by metatomic's own ASE
calculator (`mlpot export --to metatomic`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def byom_stage(out_dir: Path, quick: bool) -> None:
    import torch
    from ase.build import bulk

    from .ase import MLPotCalculator
    from .committee import make_committee

    torch.set_num_threads(1)
    atoms = bulk("Cu", "fcc", a=3.8, cubic=True).repeat((2, 2, 2))
    atoms.symbols[::4] = "Au"
    atoms.rattle(0.05, rng=np.random.default_rng(0))

    members = ["morse-cuau", "morse-cuau-committee"]  # a committee member counts as its mean
    path = make_committee(members, Path(out_dir) / "byo-committee.pt", name="byo-committee")
    atoms.calc = MLPotCalculator(path)
    energy, std = atoms.get_potential_energy(), atoms.calc.get_property("forces_std", atoms)
    each = []
    for member in members:
        a = atoms.copy()
        a.calc = MLPotCalculator(member)
        each.append(a.get_potential_energy())
    gap = abs(energy - np.mean(each))
    if not gap <= 1e-9 * max(1.0, abs(energy)):
        raise RuntimeError(f"[byom] the committee energy {energy} is not the mean of its members {each}")
    print(f"[byom] mlpot committee {' '.join(members)} -> {path.name}: {len(atoms)} Cu/Au atoms, energy = mean "
          f"of the members ({gap:.1e} eV apart), max per-atom force std {std.max():.4f} eV/A")

    try:
        from metatomic_ase import MetatomicCalculator
    except ImportError:
        print("[byom] metatomic export skipped: pip install 'mlpot_plugins[metatomic]' for it")
        return
    from .exporters import export_to

    out = export_to("metatomic", "morse-cuau-committee", Path(out_dir) / "morse-cuau-committee-metatomic.pt")
    ours = atoms.copy()
    ours.calc = MLPotCalculator("morse-cuau-committee")
    theirs = atoms.copy()
    theirs.calc = MetatomicCalculator(str(out), uncertainty_threshold=None)
    de = abs(ours.get_potential_energy() - theirs.get_potential_energy())
    df = np.abs(ours.get_forces() - theirs.get_forces()).max()
    print(f"[byom] mlpot export --to metatomic morse-cuau-committee -> {out.name}: metatomic's ASE calculator "
          f"agrees with ours to {de:.1e} eV (energy), {df:.1e} eV/A (forces)")
