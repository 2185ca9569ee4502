"""Test helper run INSIDE the NequIP side environment (never imported by pytest).

``build OUT.nequip.pth [SEED] [TYPE,NAMES]`` builds a tiny randomly initialised NequIP GNN for Cu/Au (2 layers, r_max 4.0,
per-type energy shifts and scales, ZBL off) and compiles it as `nequip-compile --mode torchscript` does.
``reference MODEL IN.npz OUT.npz`` evaluates NequIP's own ASE calculator (NequIPCalculator.from_compiled_model)
on the structures of IN.npz (keys positions_k, numbers_k, cell_k, pbc_k): energy_k, energies_k, forces_k, stress_k.
"""
import sys

import torch
from side_reference import write_reference


def build(out: str, seed: str = "0", type_names: str = "Cu,Au") -> None:
    from nequip.model import NequIPGNNModel
    from nequip.model.inference_models.torchscript import save_torchscript_model
    from nequip.utils.global_state import get_latest_global_state, set_global_state

    set_global_state()
    names = type_names.split(",")
    model = NequIPGNNModel(seed=int(seed), model_dtype="float64", r_max=4.0, type_names=names,
                           num_layers=2, l_max=1, num_features=8, radial_mlp_width=16, num_bessels=6,
                           avg_num_neighbors=15.0, per_type_energy_scales=dict(zip(names, [0.7, 0.9])),
                           per_type_energy_shifts=dict(zip(names, [-3.71, -3.05])))
    with torch.no_grad():  # random weights of a visible size, so forces are not tiny
        gen = torch.Generator().manual_seed(int(seed))
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    model.eval()
    metadata = model.metadata.copy()
    metadata.update(get_latest_global_state(only_metadata_related=True))
    metadata = {k: str(int(v)) if isinstance(v, bool) else v for k, v in metadata.items()}
    save_torchscript_model(model, metadata, out, "cpu")


def reference(model_path: str, inp: str, out: str) -> None:
    from nequip.integrations.ase import NequIPCalculator

    calc = NequIPCalculator.from_compiled_model(model_path, device="cpu")
    write_reference(calc, inp, out)


if __name__ == "__main__":
    {"build": build, "reference": reference}[sys.argv[1]](*sys.argv[2:])
