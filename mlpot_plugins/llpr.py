"""Last-layer uncertainty (LLPR / last-layer Laplace) for one trained equivariant model: ``mlpot llpr``.

The readout's last layer is linear in its input features f_i (per atom, [H]): E_i = shift + scale_i f_i . w.
A Gaussian posterior on w with covariance alpha^2 (F^T F + vs I)^-1, F the features of every training atom
(rows scale_i f_i), gives the per-atom energy std sigma_i = alpha sqrt(f_i^T (F^T F + vs I)^-1 f_i) (f_i
scaled) and, with g = sum_i f_i, the total-energy std alpha sqrt(g^T (.)^-1 g). Both need only the features
the forward pass already computes: no extra backward pass, so the cost is one model's.

Force std (the output engines read most): the exact last-layer force variance needs one backward pass per
feature (D of them, a D-member committee's cost), so we use the per-atom uncertainties u_i = sqrt(f_i^T
(.)^-1 f_i) instead: F_i depends on the energies of i and its neighbours, so forces_std_i = s_F (u_i + w
sum_{j in N(i)} u_j), s_F fitted on validation forces with the committee's closed-form NLL fit
(:func:`mlpot_plugins.training.calibration.fit_scale`); vs (the regulariser) and w (a small grid, 0 allowed)
are chosen by the lowest validation force NLL, alpha by the NLL fit of the validation total energies. The
neighbour sum is additive (each owned centre adds w u_j to its neighbours' rows), so engines with ghost atoms
get it exactly by the reverse communication they already do for forces.
Features f_i: dE_i/dw of the last linear layer (H), and by default also of the first readout layer (closed
form, C H more): on cu-emt the wider set ranks errors better (benchmarks/llpr_vs_committee.py).

Engines read uncertainty only from committees (``ensemble_size > 1``), so the file is a two-member
*pseudo-committee*: ``forces``/``energy``/``energies`` are the base model's own (bit for bit), and
``member_forces`` are F +- d_i with |d_i| = u_i + w sum_j u_j (assembled over ghost rows like forces), so
``force_uncertainty(member_forces)`` -- what LAMMPS calls after summing ghost rows -- is forces_std; no
engine changes. ``member_energy`` is E +- energy_std / s_F likewise. No ``member_virial`` (no virial std).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from . import contract
from .model_file import LoadedModel, PathLike, export, load, species_types
from .models.base import AtomisticPotential
from .models.equivariant import EquivariantPotential

KIND = "llpr"
REG_GRID = tuple(10.0 ** e for e in range(-12, 1))  # vs / (mean eigenvalue of F^T F)
NEIGHBOUR_WEIGHTS = (0.0, 1.0 / 12.0, 0.25, 1.0)  # weight of the neighbours' stds in an atom's force std


class LastLayerUncertainty(AtomisticPotential):
    """A single equivariant model plus the last-layer precision matrix (see the module docstring)."""

    def __init__(self, base: EquivariantPotential, precision: Tensor, energy_scale: float = 1.0,
                 force_scale: float = 1.0, readout_gradient: bool = True, neighbour_weight: float = 0.0):
        if base.ensemble_size != 1:
            raise ValueError(f"LLPR needs a single model (ensemble_size 1), got ensemble_size {base.ensemble_size}")
        super().__init__(base.species, base.cutoff, 2, force_scale)
        self.base = base
        self.register_buffer("precision", precision.to(base.atom_shift.dtype))  # (F^T F + vs I)^-1 [H, H]
        self.energy_scale: float = float(energy_scale)
        self.readout_gradient: bool = bool(readout_gradient)
        self.neighbour_weight: float = float(neighbour_weight)
        self.range: float = float(base.interaction_range())
        self.register_buffer("direction", torch.ones(3, dtype=base.atom_shift.dtype) / math.sqrt(3.0))

    def interaction_range(self) -> float:
        return self.range

    def features_and_energies(self, edge_vectors: Tensor, edge_index: Tensor, types: Tensor) -> Tuple[Tensor, Tensor]:
        """[1, E, 3] -> (features [N, D], energies [1, N]): dE_i/dw of the last layer's weights (D = H), and with
        ``readout_gradient`` also of the first readout layer's (D = H + C H, no extra backward: closed form)."""
        scalars = self.base.trunk(edge_vectors, edge_index, types)
        hidden = self.base.readout_features(scalars)
        atom_e = self.base.readout_energy(hidden, types)
        feats = hidden[0]
        if self.readout_gradient:
            z = scalars[0] @ self.base.readout1[0]  # [N, H]: the silu's input
            sig = torch.sigmoid(z)
            dz = (sig * (1.0 + z * (1.0 - sig))) * self.base.readout2[0, :, 0]  # dE_i/dz [N, H]
            outer = scalars[0].unsqueeze(2) * dz.unsqueeze(1)  # dE_i/dW1 [N, C, H]
            feats = torch.cat([feats, outer.reshape(feats.shape[0], -1)], dim=1)
        return feats * self.base.atom_scale.index_select(0, types).unsqueeze(1), atom_e

    def raw_sigma(self, feats: Tensor) -> Tensor:
        """[..., H] -> sqrt(f^T P f) [...] (uncalibrated)."""
        return ((feats @ self.precision) * feats).sum(-1).clamp_min(0.0).sqrt()

    @torch.jit.export
    def compute(self, positions: Tensor, types: Tensor, edge_index: Tensor, shifts: Tensor,
                n_local: int, need_virial: bool, need_uncertainty: bool) -> Dict[str, Tensor]:
        r = (positions.index_select(0, edge_index[1]) - positions.index_select(0, edge_index[0]) + shifts).detach()
        rk = r.unsqueeze(0).expand(1, -1, -1).clone()
        rk.requires_grad_(True)
        feats, atom_e = self.features_and_energies(rk, edge_index, types)
        local_e = atom_e[:, :n_local]
        grads: List[Optional[Tensor]] = torch.autograd.grad([local_e.sum(1).sum()], [rk], allow_unused=True)
        g = grads[0]
        if g is None:
            g = torch.zeros_like(rk)
        n = positions.shape[0]
        out = self.base.edge_outputs(r, g, edge_index, n, local_e, need_virial, False, False)
        if need_uncertainty:
            f = feats[:n_local].detach()
            raw = self.raw_sigma(f)  # [n_local]
            raw_total = self.raw_sigma(f.sum(0))
            d = torch.zeros((n, 3), dtype=r.dtype, device=r.device)
            d[:n_local] = raw.unsqueeze(1) * self.direction
            if self.neighbour_weight > 0.0:  # owned centres add to their neighbours' rows (ghost rows: summed
                keep = (edge_index[0] < n_local).nonzero().squeeze(1)  # into owners by the engine, like forces)
                centre = edge_index[0].index_select(0, keep)
                add = (self.neighbour_weight * raw.index_select(0, centre)).unsqueeze(1) * self.direction
                d = d.index_add(0, edge_index[1].index_select(0, keep), add)
            forces = out["forces"]
            member_forces = torch.stack([forces + d, forces - d])
            e_dev = raw_total * self.energy_scale / self.uncertainty_scale
            out["member_forces"] = member_forces
            out["member_energy"] = torch.stack([out["energy"] + e_dev, out["energy"] - e_dev])
            out["forces_std"] = self.force_uncertainty(member_forces)
            out["energies_std"] = raw * self.energy_scale
            out["energy_std"] = raw_total * self.energy_scale
        return out


def _outputs(has_virial: bool) -> List[str]:
    return [o for o in contract.outputs_for("atomistic", 2) if o != "member_virial"
            and (has_virial or o not in ("virial", "atom_virial"))]


def single_model(source: Union[PathLike, LoadedModel], member: Optional[int] = None) -> EquivariantPotential:
    """The unscripted single equivariant model of an exported file (``member`` k of a committee file)."""
    m = source if isinstance(source, LoadedModel) else load(source)
    if m.kind != "atomistic":
        raise ValueError(f"{m.path}: a {m.kind} model has no last-layer features for LLPR; LLPR works on "
                         "atomistic equivariant models (trained with `mlpot train`)")
    extra = m.metadata.get("extra") or {}
    if extra.get("uncertainty") == KIND:
        raise ValueError(f"{m.path} already carries a last-layer uncertainty; fit LLPR on its base model")
    hp = extra.get("hparams")
    if not isinstance(hp, dict):
        raise ValueError(f"{m.path} is not an mlpot equivariant model (its metadata extra has no 'hparams'), so "
                         "its last layer cannot be read; LLPR needs a model trained with `mlpot train`, or use a "
                         "committee (`mlpot committee`) for uncertainty")
    k = int(m.ensemble_size)
    if k > 1 and member is None:
        raise ValueError(f"{m.path} is a committee (ensemble_size {k}); LLPR is for a single model. Pass "
                         f"--member 0..{k - 1} to take one member, or use the committee's own uncertainty")
    if member is not None and not 0 <= member < k:
        raise ValueError(f"--member {member} does not exist in {m.path} (ensemble_size {k}); use 0..{k - 1}")
    hp = dict(hp, species=m.species, dtype=m.metadata["dtype"])
    full = EquivariantPotential(**hp)
    full.load_state_dict(m.module.state_dict(), strict=True)
    single = EquivariantPotential(**dict(hp, ensemble_size=1, ensemble="committee", uncertainty_scale=1.0))
    params = dict(full.named_parameters())
    state = {}
    for name, value in full.state_dict().items():
        if name in params and k > 1 and value.shape[0] == k:
            value = value[member:member + 1]
        state[name] = value
    single.load_state_dict(state, strict=True)
    return single


def _frame_tensors(model: LastLayerUncertainty, atoms) -> Tuple[Tensor, ...]:
    from .neighbors import neighbor_list

    dt = model.precision.dtype
    types = torch.as_tensor(species_types(model.species, atoms.get_chemical_symbols(), None,
                                          "use a model trained for them"))
    edge_index, shifts = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, model.cutoff)
    return (torch.as_tensor(atoms.positions, dtype=dt), types, torch.as_tensor(edge_index),
            torch.as_tensor(shifts, dtype=dt))


def frame_features(model: LastLayerUncertainty, atoms) -> np.ndarray:
    """Per-atom last-layer features dE_i/dw [N, H] of one structure (forward pass only)."""
    pos, types, ei, sh = _frame_tensors(model, atoms)
    r = pos.index_select(0, ei[1]) - pos.index_select(0, ei[0]) + sh
    with torch.no_grad():
        feats, _ = model.features_and_energies(r.unsqueeze(0), ei, types)
    return feats.numpy()


def _located(fn, model, atoms, n: int, source: str):
    """fn(model, atoms), a ValueError naming the file and structure."""
    try:
        return fn(model, atoms)
    except ValueError as exc:
        raise ValueError(f"{source}: structure {n}: {exc}") from None


def _reference(atoms, n: int, source: str) -> Tuple[float, np.ndarray]:
    res = atoms.calc.results if atoms.calc is not None else {}
    if "forces" not in res or "energy" not in res:
        raise ValueError(f"{source}: structure {n} has no reference energy/forces; write them to the extxyz "
                         "(ase.io.write with a calculator attached)")
    return float(res["energy"]), np.asarray(res["forces"])


def fit(base: EquivariantPotential, train: Sequence, val: Sequence, train_source: str = "training set",
        val_source: str = "validation set", readout_gradient: bool = True) -> Tuple[LastLayerUncertainty, Dict[str, Any]]:
    """Covariance of the training atoms' features, regulariser and scales fitted on the validation set."""
    from .training.calibration import fit_scale, gaussian_nll

    if not len(train):
        raise ValueError(f"{train_source} holds no structures; LLPR needs the model's training data (--data)")
    if not len(val):
        raise ValueError(f"{val_source} holds no structures; LLPR needs labelled validation data (--val)")
    h = base.readout2.shape[1] * (1 + (base.readout1.shape[1] if readout_gradient else 0))
    model = LastLayerUncertainty(base, torch.eye(h, dtype=base.atom_shift.dtype), readout_gradient=readout_gradient)
    model.eval()
    feats = np.concatenate([_located(frame_features, model, a, n, train_source) for n, a in enumerate(train)])
    cov = feats.T @ feats
    mean_eig = max(float(np.trace(cov)) / h, 1e-300)
    val_f, val_g, f_err, e_err, pairs = [], [], [], [], []
    offset = 0
    for n, atoms in enumerate(val):
        e_ref, f_ref = _reference(atoms, n, val_source)
        out = _located(lambda m, a: m.compute(*_frame_tensors(m, a), len(a), False, False), model, atoms, n,
                       val_source)
        f = frame_features(model, atoms)
        ei = _frame_tensors(model, atoms)[2].numpy()
        pairs.append(ei + offset)
        offset += len(atoms)
        val_f.append(f)
        val_g.append(f.sum(0))
        f_err.append(out["forces"].detach().numpy() - f_ref)
        e_err.append(float(out["energy"]) - e_ref)
    vf, vg, ferr, eerr = np.concatenate(val_f), np.stack(val_g), np.concatenate(f_err), np.asarray(e_err)
    centre, neighbour = np.concatenate(pairs, axis=1)
    best = None
    for t in REG_GRID:
        prec = np.linalg.inv(cov + t * mean_eig * np.eye(h))
        raw = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", vf, prec, vf), 0.0))
        if not np.any(raw > 0):
            continue
        for w in NEIGHBOUR_WEIGHTS:
            agg = raw.copy()
            np.add.at(agg, neighbour, w * raw[centre])
            s_f = fit_scale(agg, ferr)
            nll = gaussian_nll(s_f * agg, ferr)
            if np.isfinite(nll) and (best is None or nll < best[0]):
                best = (nll, t, prec, s_f, w)
    if best is None:
        raise ValueError(f"{val_source}: the last-layer features are zero on every atom, so no uncertainty can "
                         "be fitted; check that the model was trained")
    nll, t, prec, s_f, w = best
    raw_e = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", vg, prec, vg), 1e-300))
    alpha = float(math.sqrt(np.mean(eerr ** 2 / raw_e ** 2)))
    model = LastLayerUncertainty(base, torch.as_tensor(prec), alpha, s_f, readout_gradient, w)
    info = {"features": "readout gradient" if readout_gradient else "last layer", "regularizer": t * mean_eig,
            "regularizer_relative": t, "neighbour_weight": w, "force_scale": s_f, "energy_scale": alpha,
            "train_atoms": int(feats.shape[0]), "feature_dim": h, "val_force_nll": float(nll)}
    return model, info


def make_llpr(model_path: PathLike, train: PathLike, val: PathLike, out: PathLike, member: Optional[int] = None,
              name: str = "", readout_gradient: bool = True) -> Path:
    """Write an LLPR model file from a trained single model (or one committee member) and its data."""
    from .training.dataset import read_frames

    loaded = load(model_path)
    base = single_model(loaded, member)
    model, info = fit(base, read_frames(train), read_frames(val), os.fspath(train), os.fspath(val), readout_gradient)
    meta = loaded.metadata
    extra = {"uncertainty": KIND, "hparams": dict(meta["extra"]["hparams"], ensemble_size=1, ensemble="committee"),
             "base_model": meta.get("name") or Path(model_path).name, "member": member,
             "trained_on": os.fspath(train), "calibrated_on": os.fspath(val), "llpr": info}
    return export(model, out, name=name or (meta.get("name") or "model") + "-llpr",
                  outputs=_outputs("virial" in meta["outputs"]), dtype=meta["dtype"],
                  length_unit=meta["length_unit"], energy_unit=meta["energy_unit"],
                  description=f"last-layer (LLPR) uncertainty on {extra['base_model']}"
                              + (f" member {member}" if member is not None else ""),
                  references=meta["references"], extra=extra)


def _cmd_llpr(args) -> int:
    path = make_llpr(args.model, args.data, args.val, args.out, member=args.member, name=args.name,
                     readout_gradient=not args.last_layer_only)
    meta = load(path).metadata
    info = meta["extra"]["llpr"]
    print(f"wrote {path}: last-layer uncertainty, {info['train_atoms']} training atoms, regulariser "
          f"{info['regularizer']:.3g}, force scale {info['force_scale']:.4g}, energy scale {info['energy_scale']:.4g}")
    return 0


def register_cli(sub) -> None:
    from .cli_types import nonneg_int

    p = sub.add_parser("llpr", help="add last-layer (LLPR) uncertainty to a trained single model")
    p.add_argument("model", help="model file trained with `mlpot train` (or shipped name; committees need --member)")
    p.add_argument("--data", required=True, help="the model's training set (extxyz): feature covariance")
    p.add_argument("--val", required=True, help="labelled validation set (extxyz): regulariser and scales")
    p.add_argument("--member", type=nonneg_int, default=None, help="use member K of a committee file")
    p.add_argument("-o", "--out", required=True, help="output .pt file")
    p.add_argument("--last-layer-only", action="store_true",
                   help="features of the last linear layer only (default: also the first readout layer's gradient)")
    p.add_argument("--name", default="", help="model name stored in the metadata")
    p.set_defaults(func=_cmd_llpr)
