"""``mlpot import nequip MODEL.nequip.pth``: a NequIP model compiled by ``nequip-compile --mode torchscript``
(nequip 0.19) into one mlpot model file.

The compiled file is TorchScript already, so the import runs in the main environment with torch alone: the
wrapper keeps NequIP's energy network (the ``func`` inside its ForceStressOutput) and feeds it the contract's
edge vectors as ``edge_vectors``; forces, virial and per-atom virial then come from
:class:`AtomisticPotential` (with ghosts, on the local atoms' receptive field only). NequIP's ``atomic_energy`` includes its per-type energy shifts, as its own ASE
calculator's ``energies``. NequIP's edge convention is the contract's (centre ``edge_index[0]``,
vector ``x[edge_index[1]] - x[edge_index[0]] + shift``).
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import Tensor

from .receptive import ImportedMessagePassing, cast_integer_operands
from .side_env import SideEnv, add_common_arguments, check_dtype, import_paths, report

NEQUIP_VERSION = "0.19.1"
NEQUIP_METADATA = ("r_max", "type_names", "num_types", "model_dtype", "per_edge_type_cutoff")


def side_env(progress=None) -> SideEnv:
    """nequip itself (for nequip-compile and its own calculator; the tests use it); it shares our e3nn."""
    kwargs = {"progress": progress} if progress else {}
    return SideEnv(f"nequip-{NEQUIP_VERSION}", [f"nequip=={NEQUIP_VERSION}"],
                   "import nequip, torch; from nequip.integrations.ase import NequIPCalculator", **kwargs)


class NequIPPotential(ImportedMessagePassing):
    """A compiled NequIP energy network behind the mlpot contract (one member)."""

    def __init__(self, energy_model: torch.nn.Module, species: List[str], cutoff: float, n_layers: int):
        super().__init__(species, cutoff, n_layers)
        self.energy_model = energy_model

    def network_energies(self, edge_vectors: Tensor, edge_index: Tensor, types: Tensor) -> Tensor:
        n = types.shape[0]
        data: Dict[str, Tensor] = {
            "pos": torch.zeros((n, 3), dtype=edge_vectors.dtype, device=edge_vectors.device),
            "atom_types": types,
            "edge_index": edge_index,
            "edge_vectors": edge_vectors,
        }
        return self.energy_model(data)["atomic_energy"].reshape(n)


def _kind_problem(src: Path) -> Optional[str]:
    """Why the file is not a nequip-compile TorchScript file, or None."""
    if not zipfile.is_zipfile(src):
        return "not a NequIP compiled model (not a zip archive)"
    with zipfile.ZipFile(src) as z:
        names = z.namelist()
    if any("aotinductor" in n for n in names):
        return ("an AOTInductor model (nequip-compile --mode aotinductor, .nequip.pt2): it is a compiled "
                "shared library that cannot be wrapped")
    if any(n.split("/", 2)[1:2] == [".data"] for n in names if "/" in n) and not any("/code/" in n for n in names):
        return "a NequIP package (.nequip.zip, torch.package), not a compiled model"
    if not any("/code/" in n for n in names):
        return "not a TorchScript archive"
    return None


FIX = ("Compile it with `nequip-compile MODEL.nequip.zip OUT.nequip.pth --mode torchscript --device cpu` "
       "(torch < 2.10; the input may also be a checkpoint) and import OUT.nequip.pth")


def import_nequip(model, output=None, dtype: Optional[str] = None) -> Path:
    """Wrap a ``.nequip.pth`` file; returns the path of the written mlpot model file."""
    from ase.data import chemical_symbols

    from ..model_file import export, load

    src, dst = import_paths(model, output, "NequIP")
    check_dtype(dtype)
    problem = _kind_problem(src)
    if problem:
        raise ValueError(f"{src}: {problem}. {FIX}")
    extra = {k: "" for k in NEQUIP_METADATA}
    try:
        compiled = torch.jit.load(str(src), map_location="cpu", _extra_files=extra)
    except RuntimeError as exc:
        raise ValueError(f"{src}: TorchScript archive that torch cannot load ({str(exc).strip().splitlines()[0]}). "
                         f"{FIX}") from None
    meta = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in extra.items()}
    if not meta["r_max"] or not meta["type_names"]:
        raise ValueError(f"{src}: TorchScript archive without NequIP's r_max/type_names metadata, so not written by "
                         f"nequip-compile (an mlpot model file can be used directly). {FIX}")
    energy_model = getattr(getattr(compiled, "model", None), "func", None)
    if energy_model is None or not hasattr(compiled.model, "do_derivatives"):
        raise ValueError(f"{src}: NequIP compiled model without the expected ForceStressOutput(func=energy "
                         f"network) structure (nequip {torch.__version__}?). Compile it with nequip 0.19 "
                         "(`nequip-compile ... --mode torchscript`)")
    species = meta["type_names"].split()
    unknown = [s for s in species if s not in chemical_symbols[1:]]
    if unknown:
        raise ValueError(f"{src}: NequIP type names {unknown} are not element symbols, so the species cannot be "
                         "taken from the model. Retrain/compile with type_names equal to element symbols")
    cutoff = float(meta["r_max"])
    layers = sorted(int(m.group(1)) for name, _ in energy_model.named_children()
                    if (m := re.fullmatch(r"layer(\d+)_convnet", name)))
    if not layers:
        raise ValueError(f"{src}: no NequIP message-passing layers (layer<i>_convnet) found, so its interaction "
                         "range is unknown (Allegro and other architectures are not supported yet). Import a "
                         "NequIP GNN model")
    model_dtype = meta["model_dtype"] or str(next(compiled.parameters()).dtype).replace("torch.", "")
    if dtype and dtype != model_dtype:
        raise ValueError(f"{src}: --dtype {dtype} differs from the compiled model's {model_dtype}; nequip-compile "
                         f"fixes the dtype. Leave --dtype out, or train/compile with model_dtype: {dtype}")
    wrapper = torch.jit.script(NequIPPotential(energy_model, species, cutoff, len(layers)))
    cast_integer_operands(wrapper, getattr(torch, model_dtype))
    export(wrapper, dst, species=species, cutoff=cutoff, interaction_range=len(layers) * cutoff,
           length_unit="angstrom", energy_unit="eV", dtype=model_dtype, name="nequip-import",
           description=(f"NequIP GNN imported from {src} ({len(layers)} layers, r_max {cutoff} A, {model_dtype}; "
                        "units as trained, taken to be eV and A as NequIP's ASE calculator does)"),
           references=["S. Batzner et al., E(3)-equivariant graph neural networks for data-efficient and "
                       "accurate interatomic potentials, Nat. Commun. 13, 2453 (2022)"],
           extra={"source": "nequip", "num_layers": len(layers),
                  **({"per_edge_type_cutoff": meta["per_edge_type_cutoff"]} if meta["per_edge_type_cutoff"] else {})})
    report(dst, load(dst).metadata)
    return dst


def _cmd(args) -> int:
    import_nequip(args.model, args.output, args.dtype)
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("nequip", help="convert a NequIP model compiled with `nequip-compile --mode "
                                             "torchscript` (.nequip.pth) into an mlpot model file")
    p.add_argument("model", help="the .nequip.pth file written by nequip-compile --mode torchscript")
    add_common_arguments(p, side_env=False)  # a .nequip.pth needs torch only
    p.set_defaults(func=_cmd)
