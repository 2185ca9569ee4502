"""Committees of separately trained or imported models: ``mlpot committee a.pt b.pt ... -o c.pt``.

The members are exported atomistic model files with the same species (any type order: types are
remapped to the first member's order) and the same units; their cutoffs may differ. The committee is one
TorchScript file following the contract with ``ensemble_size`` = number of members:

* the engine builds edges at the largest member cutoff (the committee's ``cutoff``); each member sees
  only the edges shorter than its own cutoff; the committee's ``interaction_range`` is that cutoff plus
  the deepest message-passing reach of any member (:func:`committee_range`), so engines with ghost atoms
  give ghost centres their edges whenever one member passes messages;
* members run back to back (they share nothing), so a committee costs the sum of its members;
* a member that is itself a committee counts as one member: its committee *mean* is used;
* all members must have the same dtype (mixing float32 and float64 is refused, not converted);
* ``uncertainty_scale`` is fitted on a labelled validation set (``--calibrate``) with the same
  closed-form NLL fit as ``mlpot train`` (:func:`mlpot_plugins.training.calibration.fit_scale`), else 1.0.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from . import contract
from .model_file import LoadedModel, PathLike, export, load
from .models.base import AtomisticPotential


class CommitteeOfModels(AtomisticPotential):
    """K exported atomistic models evaluated back to back; outputs follow the contract for ensemble_size K."""

    def __init__(self, members: Sequence[torch.jit.ScriptModule], species: List[str], type_maps: Tensor,
                 cutoffs: List[float], interaction_range: float, has_virial: bool,
                 uncertainty_scale: float = 1.0):
        super().__init__(species, max(cutoffs), len(members), uncertainty_scale)
        self.members = nn.ModuleList(list(members))
        self.member_cutoffs: List[float] = [float(c) for c in cutoffs]
        self.range: float = float(interaction_range)
        self.has_virial: bool = bool(has_virial)
        self.register_buffer("type_maps", type_maps.to(torch.int64))  # [K, S]: committee type -> member type

    def interaction_range(self) -> float:
        return self.range

    @torch.jit.export
    def compute(self, positions: Tensor, types: Tensor, edge_index: Tensor, shifts: Tensor,
                n_local: int, need_virial: bool, need_uncertainty: bool) -> Dict[str, Tensor]:
        r = positions.index_select(0, edge_index[1]) - positions.index_select(0, edge_index[0]) + shifts
        d2 = (r * r).sum(-1)
        need_virial = need_virial and self.has_virial
        energies: List[Tensor] = []
        atom_e: List[Tensor] = []
        forces: List[Tensor] = []
        virials: List[Tensor] = []
        atom_virials: List[Tensor] = []
        for k, member in enumerate(self.members):
            cut = self.member_cutoffs[k]
            keep = (d2 < cut * cut).nonzero().squeeze(1)
            out = member.compute(positions, self.type_maps[k].index_select(0, types),
                                 edge_index.index_select(1, keep), shifts.index_select(0, keep),
                                 n_local, need_virial, False)
            energies.append(out["energy"])
            atom_e.append(out["energies"])
            forces.append(out["forces"])
            if need_virial:
                virials.append(out["virial"])
                atom_virials.append(out["atom_virial"])
        member_energy = torch.stack(energies)
        local_e = torch.stack(atom_e)
        member_forces = torch.stack(forces)
        result: Dict[str, Tensor] = {"energy": member_energy.mean(), "energies": local_e.mean(0),
                                     "forces": member_forces.mean(0)}
        if need_virial:
            member_virial = torch.stack(virials)
            result["virial"] = member_virial.mean(0)
            result["atom_virial"] = torch.stack(atom_virials).mean(0)
            if need_uncertainty:
                result["member_virial"] = member_virial
        if need_uncertainty:
            result["member_energy"] = member_energy
            result["member_forces"] = member_forces
            result["forces_std"] = self.force_uncertainty(member_forces)
            result["energies_std"] = local_e.std(0, unbiased=False) * self.uncertainty_scale
            result["energy_std"] = member_energy.std(unbiased=False) * self.uncertainty_scale
        return result


def _committee_outputs(k: int, has_virial: bool) -> List[str]:
    """The contract's outputs for ensemble_size k, without the virial ones when a member has none."""
    virial_outputs = ("virial", "atom_virial", "member_virial")
    return [o for o in contract.outputs_for("atomistic", k) if has_virial or o not in virial_outputs]


def _check_members(models: Sequence[LoadedModel]) -> None:
    if len(models) < 2:
        raise ValueError(f"a committee needs at least 2 member models, got {len(models)}. "
                         "Pass two or more exported model files")
    first = models[0]
    for m in models:
        if m.kind != "atomistic":
            raise ValueError(f"{m.path}: a {m.kind!r} model cannot be a committee member; "
                             "committees combine atomistic models only")
    for m in models[1:]:
        if sorted(m.species) != sorted(first.species):
            raise ValueError(f"species differ: {first.path} has {first.species}, {m.path} has {m.species}. "
                             "Committee members must be trained for the same elements")
        units = lambda x: (x.metadata["length_unit"], x.metadata["energy_unit"])  # noqa: E731
        if units(m) != units(first):
            raise ValueError(f"units differ: {first.path} uses {units(first)}, {m.path} uses {units(m)}. "
                             "Re-export the members in the same units")
        if m.metadata["dtype"] != first.metadata["dtype"]:
            raise ValueError(f"dtypes differ: {first.path} is {first.metadata['dtype']}, {m.path} is "
                             f"{m.metadata['dtype']}. Re-export the members with the same dtype "
                             "(e.g. `mlpot export --dtype float64`); mixed precision is not converted")


def committee_range(models: Sequence[LoadedModel]) -> float:
    """cutoff + the deepest message-passing reach (interaction_range - cutoff) of any member.

    Engines give ghost centres their edges only when interaction_range > cutoff, and then up to the
    committee cutoff; a member that passes messages over ``n`` hops of its own cutoff needs ghost centres
    ``interaction_range - cutoff`` deep, so the committee's range is its cutoff plus the largest such depth
    (its cutoff alone when every member is a pair/local model)."""
    return max(m.cutoff for m in models) + max(m.interaction_range - m.cutoff for m in models)


def build_committee(members: Sequence[Union[PathLike, LoadedModel]], uncertainty_scale: float = 1.0) -> CommitteeOfModels:
    """An unscripted committee module from exported member files (or shipped names, or loaded models)."""
    models = [m if isinstance(m, LoadedModel) else load(m) for m in members]
    _check_members(models)
    species = models[0].species
    type_maps = torch.tensor([[m.species.index(s) for s in species] for m in models], dtype=torch.int64)
    has_virial = all("virial" in m.metadata["outputs"] and "atom_virial" in m.metadata["outputs"] for m in models)
    return CommitteeOfModels([m.module for m in models], species, type_maps, [m.cutoff for m in models],
                             committee_range(models), has_virial, uncertainty_scale)


def calibration_data(model: LoadedModel, frames: Sequence, source: str = "validation set") -> Dict[str, np.ndarray]:
    """Uncalibrated per-atom force stds and force errors of a committee on labelled frames."""
    from .ase import MLPotCalculator

    types_of = MLPotCalculator(model).types_of  # the one species check, with its message
    sigma, errors = [], []
    scale = float(model.metadata["uncertainty_scale"])
    for n, atoms in enumerate(frames):
        ref = atoms.calc.results.get("forces") if atoms.calc is not None else None
        if ref is None:
            raise ValueError(f"{source}: structure {n} has no reference forces; write them to the extxyz "
                             "(ase.io.write with a calculator attached)")
        out = model.compute_on(atoms.positions, atoms.cell.array, atoms.pbc, types_of(atoms),
                               need_virial=False, need_uncertainty=True)
        sigma.append(out["forces_std"].detach().cpu().numpy() / scale)
        errors.append(out["forces"].detach().cpu().numpy() - ref)
    return {"sigma": np.concatenate(sigma), "errors": np.concatenate(errors)}


def make_committee(members: Sequence[PathLike], out: PathLike, calibrate: Optional[PathLike] = None,
                   name: str = "", description: str = "") -> Path:
    """Write a committee model file from member files; ``calibrate``: labelled extxyz for the scale."""
    import tempfile

    from .training.calibration import fit_scale
    from .training.dataset import read_frames

    models = [load(p) for p in members]
    committee = build_committee(models)
    libs = [e for m in models for e in m.metadata.get("torch_libraries", [])]  # members' extensions, once
    meta: Dict[str, Any] = dict(
        name=name, outputs=_committee_outputs(len(models), committee.has_virial),
        interaction_range=committee.range, dtype=models[0].metadata["dtype"],
        length_unit=models[0].metadata["length_unit"], energy_unit=models[0].metadata["energy_unit"],
        description=description or "Committee of " + ", ".join(
            m.metadata.get("name") or m.path.name for m in models),
        references=sorted({r for m in models for r in m.metadata["references"]}),
        torch_libraries=[e for i, e in enumerate(libs) if e not in libs[:i]],
        extra={"members": [m.metadata.get("name") or m.path.name for m in models],
               "member_cutoffs": committee.member_cutoffs})
    if calibrate is not None:
        frames = read_frames(calibrate)
        with tempfile.TemporaryDirectory() as tmp:
            raw = load(export(committee, Path(tmp) / "uncalibrated.pt", **meta))
            data = calibration_data(raw, frames, source=os.fspath(calibrate))
        if not np.any(data["sigma"] > 0):
            raise ValueError(f"{calibrate}: the members agree exactly on every structure (force std 0), so "
                             "no uncertainty scale can be fitted. Use members that differ, or drop --calibrate")
        scale = fit_scale(data["sigma"], data["errors"])
        if not np.isfinite(scale):
            raise ValueError(f"{calibrate}: calibration gave a non-finite scale ({scale}); check the reference "
                             "energies/forces in the file for NaN or inf")
        meta.update(uncertainty_scale=scale)  # export() sets the module's attribute from it
        meta["extra"]["calibrated_on"] = os.fspath(calibrate)
    return export(committee, out, **meta)


def _cmd_committee(args) -> int:
    path = make_committee(args.models, args.out, calibrate=args.calibrate, name=args.name)
    meta = load(path).metadata
    print(f"wrote {path}: {meta['ensemble_size']} members, cutoff {meta['cutoff']}, "
          f"uncertainty scale {meta['uncertainty_scale']:.6g}")
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("committee", help="combine separately trained or imported models into one committee file")
    p.add_argument("models", nargs="+", help="member model files (or shipped model names), same species and units")
    p.add_argument("-o", "--out", required=True, help="output committee .pt file")
    p.add_argument("--calibrate", help="labelled extxyz (energy/forces) to fit the uncertainty scale on")
    p.add_argument("--name", default="", help="model name stored in the metadata")
    p.set_defaults(func=_cmd_committee)
