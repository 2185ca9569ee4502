"""Converter run INSIDE the MACE side environment (needs mace-torch and e3nn 0.4.4): MACE .model -> mlpot file.

``python -m mlpot_plugins.importers._mace_convert MODEL OUT DTYPE HEAD`` prints one JSON line last:
``{"ok": true, "metadata": {...}}`` or ``{"ok": false, "error": "<problem>. <fix>"}``.

The wrapper feeds MACE zero positions and the contract's edge vectors as its ``shifts``: MACE's edge vector
``positions[receiver] - positions[sender] + shifts`` is then exactly our edge vector, so forces, virial and
per-atom virial come from :class:`AtomisticPotential` (one backward pass to the edge vectors). MACE's
``node_energy`` includes the E0 atomic reference energies, as MACE's own calculator's ``energies``.
"""
from __future__ import annotations

import json
import sys
import traceback
from typing import Dict, List

import torch
from torch import Tensor

from mlpot_plugins.importers.receptive import ImportedMessagePassing, cast_integer_operands


class MACEPotential(ImportedMessagePassing):
    """A MACE model behind the mlpot contract (one member)."""

    def __init__(self, mace: torch.nn.Module, species: List[str], cutoff: float, head: int, n_layers: int):
        super().__init__(species, cutoff, n_layers)
        self.mace = mace
        self.head = head

    def network_energies(self, edge_vectors: Tensor, edge_index: Tensor, types: Tensor) -> Tensor:
        n = types.shape[0]
        dtype = edge_vectors.dtype
        dev = edge_vectors.device
        # MACE aggregates at the receiver (edge_index[1] of its own list): make the contract's centre
        # (our edge_index[0]) MACE's receiver, so the edge vector seen by MACE is centre - neighbour
        data: Dict[str, Tensor] = {
            "positions": torch.zeros((n, 3), dtype=dtype, device=dev),
            "node_attrs": torch.nn.functional.one_hot(types, self.n_species).to(dtype),
            "edge_index": edge_index.flip(0),
            "shifts": -edge_vectors,
            "unit_shifts": torch.zeros((edge_index.shape[1], 3), dtype=dtype, device=dev),
            "cell": torch.zeros((1, 3, 3), dtype=dtype, device=dev),
            "batch": torch.zeros((n,), dtype=torch.int64, device=dev),
            "ptr": torch.tensor([0, n], dtype=torch.int64, device=dev),
            "head": torch.full((1,), self.head, dtype=torch.int64, device=dev),
        }
        out = self.mace(data, training=False, compute_force=False, compute_virials=False,
                        compute_stress=False)
        e = out["node_energy"]
        assert e is not None
        return e


def _fail(problem: str, fix: str) -> None:
    raise ValueError(f"{problem}. {fix}")


def convert(model_path: str, out_path: str, dtype_name: str, head_name: str) -> dict:
    import mace  # noqa: F401  first: it lets e3nn 0.4.4 load its constants under torch >= 2.6
    from ase.data import chemical_symbols
    from e3nn.util import jit

    from mlpot_plugins.model_file import export

    try:
        model = torch.load(model_path, map_location="cpu", weights_only=False)
    except Exception as exc:  # pickle/zip errors of every kind: the file is not a saved torch module
        _fail(f"{model_path}: not a MACE model file (torch.load failed: {type(exc).__name__}: "
              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})",
              "Give the .model file written by mace_run_train (a pickled MACE module), not a checkpoint, "
              "a TorchScript export or a compiled model")
    needed = ("atomic_numbers", "r_max", "num_interactions", "interactions", "atomic_energies_fn")
    if not isinstance(model, torch.nn.Module) or not all(hasattr(model, a) for a in needed):
        _fail(f"{model_path}: not a MACE model (it holds a {type(model).__name__}, without "
              f"{[a for a in needed if not hasattr(model, a)] if isinstance(model, torch.nn.Module) else needed})",
              "Give the .model file written by mace_run_train (for a training checkpoint, rerun "
              "mace_run_train to write the .model)")
    if type(model).__name__ not in ("MACE", "ScaleShiftMACE"):
        _fail(f"{model_path}: MACE model class {type(model).__name__} is not supported (it does not predict "
              "a plain energy)", "Import an energy model (MACE or ScaleShiftMACE)")
    species = [chemical_symbols[int(z)] for z in model.atomic_numbers]
    cutoff = float(model.r_max)  # before any dtype change (r_max is a float64 buffer)
    n_layers = int(model.num_interactions)
    heads = list(getattr(model, "heads", None) or ["Default"])
    if head_name:
        if head_name not in heads:
            _fail(f"head {head_name!r} is not one of the model's heads {heads}", "Pass one of them to --head")
        head = heads.index(head_name)
    elif len(heads) == 1:
        head = 0
    else:
        default = [i for i, h in enumerate(heads) if h.lower() == "default"]
        if not default:
            _fail(f"the model has several heads {heads} and none is 'default'", "Choose one with --head NAME")
        head = default[0]
    src_dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    dtype_name = dtype_name or src_dtype
    model = model.to(getattr(torch, dtype_name)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    wrapper = MACEPotential(model, species, cutoff, head, n_layers)
    # e3nn's compile scripts its code-generated tensor products (the children) first; then the whole is scripted
    scripted = torch.jit.script(jit.compile(wrapper))
    cast_integer_operands(scripted, getattr(torch, dtype_name))  # ZBL's 14.3996 * Z_u * Z_v
    description = (f"MACE model {type(model).__name__} imported from {model_path} (head {heads[head]!r}, "
                   f"{n_layers} interactions, r_max {cutoff} A, trained in {src_dtype})")
    export(scripted, out_path, species=species, cutoff=cutoff, interaction_range=n_layers * cutoff,
           length_unit="angstrom", energy_unit="eV", dtype=dtype_name, name=f"mace-import",
           description=description,
           references=["I. Batatia et al., MACE: Higher order equivariant message passing neural networks "
                       "for fast and accurate force fields, NeurIPS 2022"],
           extra={"source": "mace", "mace_version": _version("mace-torch"), "mace_class": type(model).__name__,
                  "head": heads[head], "num_interactions": n_layers, "source_dtype": src_dtype})
    from mlpot_plugins.model_file import load

    return {"metadata": load(out_path).metadata}


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def main(argv: List[str]) -> int:
    try:
        reply = {"ok": True, **convert(*argv)}
    except ValueError as exc:
        reply = {"ok": False, "error": str(exc)}
    except Exception as exc:
        traceback.print_exc()
        reply = {"ok": False, "error": f"converting {argv[0]} failed: {type(exc).__name__}: {exc}. "
                                       "Report this with the MACE version the model was trained with"}
    print(json.dumps(reply))
    return 0 if reply["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
