"""Re-export the shipped Holstein committees with the current model code, keeping weights and metadata:
``python -m mlpot_plugins.pretrained.reexport_holstein`` (after speed-only changes to model.py)."""
from pathlib import Path

import torch

from ..model_file import export, load
from ..holstein.params import HolsteinParams
from ..holstein.train import build_model

HERE = Path(__file__).resolve().parent


def reexport(name: str) -> None:
    old = load(name)
    meta, extra = old.metadata, old.metadata["extra"]
    arch = extra["architecture"]
    sd = old.module.state_dict()
    m = build_model(HolsteinParams.from_dict(extra["holstein"]), arch.get("arch", "conv"), extra["patch"]["radius2"],
                    arch["channels"], arch["hidden"], meta["ensemble_size"], arch["energy_based"])
    m.load_state_dict(sd)
    m.uncertainty_scale = meta["uncertainty_scale"]
    Q = torch.randn(2, 12, 12, generator=torch.Generator().manual_seed(0)) * 3
    ref = old.module.compute_lattice(Q, True)
    export(m, HERE / f"{name}.pt", kind="lattice", name=meta["name"], description=meta["description"],
           references=meta["references"], extra=extra)
    new = load(name).module.compute_lattice(Q, True)
    for k in ref:
        assert torch.allclose(ref[k], new[k], atol=1e-5), k
    print("re-exported", name)


if __name__ == "__main__":
    for n in ("holstein-d4", "holstein-d4-energy"):
        reexport(n)
