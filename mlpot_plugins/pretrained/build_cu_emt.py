"""Rebuild the shipped ``cu-emt`` committee: ``python -m mlpot_plugins.pretrained.build_cu_emt [WORKDIR]``.

1. regenerates the deterministic EMT Cu sets (train seed 0, held-out test seed 1, OOD: 2400 K MD and 10 %
   compression) with ``mlpot data emt``'s generator;
2. trains a K=4 equivariant committee with ``mlpot train`` (fp32, ~25 min on 1 CPU thread; wall-clock budget
   ``max_minutes`` makes the epoch count machine-dependent, so numbers may differ slightly between rebuilds);
3. calibrates the force std on the validation split, exports in float64 to ``pretrained/cu-emt.pt`` and
   leaves parity.png, calibration.png and metrics.json in WORKDIR/run.

``python -m mlpot_plugins.pretrained.build_cu_emt --reexport [NAME]`` instead re-scripts a shipped equivariant
file (``cu-emt``, or ``ala2-xtb``) with the current model code (e.g. after a contract output was added or a
layer was made faster), without retraining: the weights and metadata are copied into a fresh module, and every
output is checked to equal the old one to round-off (1e-10 relative: a faster kernel may reorder sums).
"""
import shutil
import sys
from pathlib import Path

import yaml

from ..emt_data import generate, write

HERE = Path(__file__).resolve().parent

CONFIG = {
    "data": {"train": "train.extxyz", "test": "test.extxyz",
             "ood": {"ood-hot": "ood-hot.extxyz", "ood-compressed": "ood-compressed.extxyz"}},
    "model": {"species": ["Cu"], "cutoff": 4.0, "lmax": 2, "n_layers": 2, "channels": 12, "radial": "spline",
              "n_basis": 16, "nonlinearity": "gate", "readout_hidden": 12, "ensemble_size": 4,
              "ensemble": "committee", "seed": 0, "dtype": "float32"},
    "training": {"epochs": 400, "lr": 5e-3, "batch_size": 4, "energy_weight": 1.0, "force_weight": 1.0,
                 "stress_weight": 10.0, "lr_patience": 5, "early_stopping_patience": 15, "val_fraction": 0.1,
                 "seed": 0, "threads": 1, "max_minutes": 25.0},
    "output": {"dir": "run", "name": "cu-emt", "export_dtype": "float64",
               "description": "Cu EMT committee (K=4) E(3)-equivariant potential, lmax 2, 2 layers, 12 channels, "
                              "cutoff 4 A, float64; built by mlpot_plugins/pretrained/build_cu_emt.py"},
}
SETS = {"train.extxyz": ("train", 0), "test.extxyz": ("train", 1), "ood-hot.extxyz": ("ood-hot", 2),
        "ood-compressed.extxyz": ("ood-compressed", 3)}


def main(workdir: str = "cu-emt-build") -> Path:
    from ..training.train import run

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    for name, (which, seed) in SETS.items():
        write(work / name, generate("Cu", which, seed=seed))
    (work / "cu_emt.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    resume = (work / "run" / "last.pt").is_file()
    run(work / "cu_emt.yaml", resume=resume, progress=sys.stderr.isatty())
    target = HERE / "cu-emt.pt"
    shutil.copyfile(work / "run" / "model.pt", target)
    print(f"wrote {target} ({target.stat().st_size / 1024:.0f} KiB)")
    return target


def reexport(path: Path = HERE / "cu-emt.pt", tolerance: float = 1e-10) -> Path:
    """Re-script ``path`` with the current code: same weights and metadata, outputs equal to ``tolerance``
    relative (of each output's largest magnitude) on a rattled test structure of the model's species."""
    import tempfile

    import numpy as np
    import torch
    from ase import Atoms
    from ase.build import bulk

    from ..model_file import export, load
    from ..models.equivariant import EquivariantPotential

    old = load(path)
    meta = old.metadata
    if "hparams" not in meta.get("extra", {}):
        raise ValueError(f"{path.name} is not an equivariant model file (its metadata has no extra['hparams']); "
                         "re-export Holstein models with `python -m mlpot_plugins.pretrained.reexport_holstein` and "
                         "the Morse references with `python -m mlpot_plugins.pretrained.build`")
    hparams = dict(meta["extra"]["hparams"], species=meta["species"])
    model = EquivariantPotential(**hparams).to(getattr(torch, meta.get("dtype", "float64")))
    model.load_state_dict(old.module.state_dict(), strict=True)
    model.uncertainty_scale = meta["uncertainty_scale"]
    rng = np.random.default_rng(3)
    if meta["species"] == ["Cu"]:
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
        atoms.rattle(0.1, rng=rng)
    else:  # a periodic box of every species, atoms on a jittered grid 1.5 A apart
        grid = np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3) * 1.5
        atoms = Atoms([meta["species"][i % len(meta["species"])] for i in range(len(grid))],
                      positions=grid + rng.normal(0.0, 0.1, grid.shape), cell=[4.5] * 3, pbc=True)
    types = [meta["species"].index(s) for s in atoms.get_chemical_symbols()]
    with tempfile.TemporaryDirectory() as tmp:
        new = load(export(model, Path(tmp) / path.name, name=meta["name"], description=meta["description"],
                          references=meta["references"], extra=meta["extra"]))
        args = (atoms.positions, atoms.cell.array, atoms.pbc, types, True, True)
        before, after = old.compute_on(*args), new.compute_on(*args)
        changed = [k for k in before if before[k].shape != after[k].shape or
                   float((before[k] - after[k]).abs().max()) > tolerance * max(1.0, float(before[k].abs().max()))]
        if changed:
            raise RuntimeError(f"re-exported {path.name} differs in {changed} beyond {tolerance:g}; not replaced")
        path.write_bytes(new.path.read_bytes())
    return path


if __name__ == "__main__":
    if sys.argv[1:2] == ["--reexport"]:
        print("re-exported", reexport(HERE / f"{(sys.argv[2:3] or ['cu-emt'])[0]}.pt"))
    else:
        main(*sys.argv[1:2])
