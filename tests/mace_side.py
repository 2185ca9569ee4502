"""Test helper run INSIDE the MACE side environment (never imported by pytest).

``build OUT.model [SEED] [CHANNELS] [R_MAX]`` writes a randomly initialised ScaleShiftMACE for Cu/Au
(2 interactions, CHANNELS x (0e + 1o) features, default 8 (tiny), r_max 4.5, E0s set, ZBL pair repulsion), saved as mace_run_train saves models (torch.save of the module).
``reference MODEL IN.npz OUT.npz [--float32]`` evaluates MACE's own ASE calculator on the structures of IN.npz
(keys positions_k, numbers_k, cell_k, pbc_k) and writes energy_k, energies_k, forces_k, stress_k.
"""
import sys

import numpy as np
import torch
from side_reference import write_reference


def build(out: str, seed: str = "0", channels: str = "8", r_max: str = "4.5") -> None:
    from mace import modules  # first: it lets e3nn 0.4.4 load its constants under torch >= 2.6

    from e3nn import o3

    torch.set_default_dtype(torch.float64)
    torch.manual_seed(int(seed))
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    model = modules.ScaleShiftMACE(
        r_max=float(r_max), num_bessel=6, num_polynomial_cutoff=5, max_ell=2, interaction_cls=block,
        interaction_cls_first=block, num_interactions=2, num_elements=2, hidden_irreps=o3.Irreps(f"{channels}x0e + {channels}x1o"),
        MLP_irreps=o3.Irreps("16x0e"), atomic_energies=np.array([-3.71, -3.05]), avg_num_neighbors=12.0,
        atomic_numbers=[29, 79], correlation=2, gate=torch.nn.functional.silu, pair_repulsion=True,
        atomic_inter_scale=0.8, atomic_inter_shift=-0.1)
    with torch.no_grad():  # random weights of a visible size, so forces are not tiny
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    torch.save(model, out)


def reference(model_path: str, inp: str, out: str, *flags: str) -> None:
    from mace.calculators import MACECalculator

    dtype = "float32" if "--float32" in flags else "float64"
    # MACE's calculator sets the default dtype only while it builds the graph, but its ZBL term computes
    # 14.3996 * Z_u * Z_v from integer tensors in the process's default dtype: evaluate as mace_run_train does,
    # with the default dtype the model's
    torch.set_default_dtype(getattr(torch, dtype))
    calc = MACECalculator(model_paths=model_path, device="cpu", default_dtype=dtype)
    write_reference(calc, inp, out)


if __name__ == "__main__":
    {"build": build, "reference": reference}[sys.argv[1]](*sys.argv[2:])
