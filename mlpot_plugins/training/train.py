"""``mlpot train CONFIG.yaml``: fit an EquivariantPotential (committee) to energies, forces and stresses.

Every step runs the model's own contract code (``AtomisticPotential.evaluate(create_graph=True)``), so the
forces trained on are exactly the forces engines get. Committee members have separate weights, so the
summed per-member loss trains them independently in one batched pass; the optional heteroscedastic term
is the joint energy-force Gaussian NLL of the committee mean under the committee variance.
"""
from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
import yaml
from tqdm import tqdm

from ..models.equivariant import DEFAULTS as MODEL_DEFAULTS
from ..models.equivariant import EquivariantPotential
from ..cli_types import bounded_float, bounded_int
from ..runsafe import StopSignals, check_finite, check_output_dir, torch_save_atomic
from .checkpoint import read_checkpoint
from .dataset import Structure, read_frames, species_statistics, split, to_structures

TRAINING_DEFAULTS: Dict[str, Any] = dict(
    epochs=100, lr=5e-3, min_lr=1e-5, batch_size=4, energy_weight=1.0, force_weight=1.0, stress_weight=0.0,
    nll_weight=0.0, lr_factor=0.5, lr_patience=4, early_stopping_patience=12, seed=0, threads=1,
    max_minutes=0.0, val_fraction=0.1, checkpoint_minutes=10.0, lr_schedule="plateau", init_from="")
LR_SCHEDULES = ("plateau", "cosine")
# hyperparameters that may differ between a model and the weights it starts from (``training.init_from``)
INIT_FREE = ("dtype", "seed", "uncertainty_scale")
SECTIONS = ("data", "model", "training", "output")


# options that must be > 0 (every other number must be >= 0)
POSITIVE_OPTIONS = {"epochs", "batch_size", "lr", "lr_factor", "cutoff", "lmax", "n_layers", "channels",
                    "n_basis", "radial_hidden", "readout_hidden", "grid_resolution", "avg_num_neighbors",
                    "ensemble_size", "uncertainty_scale"}


def _typed(path, section: str, key: str, value, default, positive: bool = False):
    """``value`` converted to the type of ``default`` with a clear error naming the option and the file;
    numbers must be >= 0, or > 0 with ``positive`` (or a name in POSITIVE_OPTIONS)."""
    name = f"{section}.{key}"
    positive = positive or key in POSITIVE_OPTIONS
    try:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{name}={value!r} must be true or false")
            return value
        if isinstance(default, int):
            return bounded_int(value, name, 1 if positive else 0)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise ValueError(f"{name}={value!r} is not a number")
            return bounded_float(value, name, 0.0, strict=positive)
        if isinstance(default, str):
            if not isinstance(value, str):
                raise ValueError(f"{name}={value!r} must be a string like {default!r}")
            return value
        if isinstance(default, list):
            if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{name}={value!r} must be a non-empty list of strings like {default!r}")
            return value
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}; fix the value in the config") from None
    return value


def _section(path, cfg: dict, name: str) -> Dict[str, Any]:
    value = cfg.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{path}: section {name!r} must be a mapping of key: value lines, got a "
                         f"{type(value).__name__} ({value!r:.60}); see docs/equivariant.md for the layout")
    return dict(value)


def _path_option(path, section: str, key: str, value) -> str:
    if not isinstance(value, (str, Path)) or not str(value):
        raise ValueError(f"{path}: {section}.{key}={value!r} must be a file path (a string)")
    return str((path.parent / value).resolve())


def read_config_file(path, sections, command: str = "training", doc: str = "docs/equivariant.md") -> Dict[str, Any]:
    """The YAML mapping in ``path`` with only the top-level ``sections`` (clear errors for a missing file, a
    folder, bad YAML, a non-mapping and unknown sections). Shared by ``mlpot train`` and ``mlpot learn``."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{command} config {path} is a directory; give the YAML file inside it "
                                f"(e.g. {path / 'config.yaml'})")
    if not path.is_file():
        raise FileNotFoundError(f"{command} config {path} does not exist")
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ValueError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}; fix the "
                         f"syntax (see the example config in {doc})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text (YAML) file; pass the {command} config") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: the config must be a YAML mapping with sections {list(sections)}")
    unknown = sorted(set(map(str, cfg)) - set(sections))
    if unknown:
        raise ValueError(f"{path}: unknown config section(s) {unknown}; valid: {list(sections)}")
    return cfg


def typed_options(path, cfg: dict, section: str, defaults: Dict[str, Any], fill: bool = True,
                  positive=()) -> Dict[str, Any]:
    """Section ``section`` of ``cfg`` checked against ``defaults`` (unknown keys, types, ranges: the keys in
    ``positive`` must be > 0); with ``fill`` the defaults of missing keys are added."""
    given = _section(path, cfg, section)
    bad = sorted(set(given) - set(defaults))
    if bad:
        raise ValueError(f"{path}: unknown {section} option(s) {bad}; valid: {sorted(defaults)}")
    out = dict(defaults) if fill else {}
    out.update({k: _typed(path, section, k, v, defaults[k], k in positive) for k, v in given.items()})
    return out


def validate_sections(path, cfg: dict) -> Dict[str, Any]:
    """The data/model/training/output sections of a training config, validated, paths made absolute."""
    path = Path(path)
    data = _section(path, cfg, "data")
    if "train" not in data:
        raise ValueError(f"{path}: data.train (an extxyz file) is required")
    data["train"] = _path_option(path, "data", "train", data["train"])
    if data.get("test"):
        data["test"] = _path_option(path, "data", "test", data["test"])
    ood = data.get("ood") or {}
    if not isinstance(ood, dict):
        raise ValueError(f"{path}: data.ood must be a mapping name: extxyz file, got {ood!r:.60}")
    data["ood"] = {k: _path_option(path, "data.ood", k, v) for k, v in ood.items()}
    model = typed_options(path, cfg, "model", MODEL_DEFAULTS, fill=False)
    training = typed_options(path, cfg, "training", TRAINING_DEFAULTS)
    if training["lr_schedule"] not in LR_SCHEDULES:
        raise ValueError(f"{path}: training.lr_schedule={training['lr_schedule']!r} is not one of "
                         f"{list(LR_SCHEDULES)}; plateau halves the rate when validation stalls, cosine decays it "
                         "to min_lr over the epochs")
    if training["init_from"]:
        training["init_from"] = _path_option(path, "training", "init_from", training["init_from"])
        if not Path(training["init_from"]).is_file():
            raise ValueError(f"{path}: training.init_from {training['init_from']} does not exist; give an "
                             "exported model (.pt from mlpot train/export) or a checkpoint (best.pt, last.pt)")
    output = _section(path, cfg, "output")
    output["dir"] = _path_option(path, "output", "dir", output.get("dir", "run"))
    check_output_dir(output["dir"], "output.dir")  # before the work: fail now, not after training
    return {"data": data, "model": model, "training": training, "output": output}


def load_config(path) -> Dict[str, Any]:
    return validate_sections(path, read_config_file(path, SECTIONS))


def structure_loss(model: EquivariantPotential, s: Structure, tc: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    k = model.ensemble_size
    need_virial = tc["stress_weight"] > 0 and s.stress is not None
    out = model.evaluate(s.positions, s.types, s.edge_index, s.shifts, s.n_atoms, need_virial, k > 1, True)
    n = s.n_atoms
    member_e = out["member_energy"] if k > 1 else out["energy"].unsqueeze(0)
    member_f = out["member_forces"] if k > 1 else out["forces"].unsqueeze(0)
    e_err = (member_e - s.energy) / n
    f_err = member_f - s.forces
    terms = {"energy": (e_err ** 2).mean(), "forces": (f_err ** 2).mean()}
    total = tc["energy_weight"] * terms["energy"] + tc["force_weight"] * terms["forces"]
    if need_virial:
        stress = -out["virial"] / s.volume
        terms["stress"] = ((stress - s.stress) ** 2).mean()
        total = total + tc["stress_weight"] * terms["stress"]
    if tc["nll_weight"] > 0 and k > 1:
        var_e = member_e.var(unbiased=False) / n ** 2 + 1e-8
        mean_f = member_f.mean(0)
        var_f = (member_f - mean_f).pow(2).sum(-1).mean(0) / 3.0 + 1e-6  # [N] per component
        nll_e = 0.5 * ((member_e.mean() - s.energy) / n) ** 2 / var_e + 0.5 * torch.log(var_e)
        nll_f = (0.5 * (mean_f - s.forces).pow(2) / var_f[:, None] + 0.5 * torch.log(var_f)[:, None]).mean()
        terms["nll"] = nll_e + nll_f
        total = total + tc["nll_weight"] * terms["nll"]
    terms["total"] = total
    return terms


def batchable(s: Structure, tc: Dict[str, Any]) -> bool:
    """Structures whose loss has only energy and force terms can share one call (``batch_loss``)."""
    return tc["nll_weight"] == 0 and not (tc["stress_weight"] > 0 and s.stress is not None)


def batch_loss(model: EquivariantPotential, batch: List[Structure], tc: Dict[str, Any]) -> torch.Tensor:
    """The mean of ``structure_loss(...)["total"]`` over ``batch`` (energy and force terms), in one model call
    on the disjoint union of the structures: each structure keeps its own weight (per-atom energy error, forces
    averaged over its own atoms), so the value equals the per-structure mean up to rounding, at the cost of one
    call of the whole batch instead of one per structure (small molecules: calls are overhead-bound)."""
    k = model.ensemble_size
    offsets = np.cumsum([0] + [s.n_atoms for s in batch])
    positions = torch.cat([s.positions for s in batch])
    types = torch.cat([s.types for s in batch])
    edge_index = torch.cat([s.edge_index + int(o) for s, o in zip(batch, offsets[:-1])], dim=1)
    shifts = torch.cat([s.shifts for s in batch])
    seg = torch.cat([torch.full((s.n_atoms,), i, dtype=torch.long) for i, s in enumerate(batch)])
    n_b = torch.tensor([float(s.n_atoms) for s in batch], dtype=positions.dtype)
    src, dst = edge_index[0], edge_index[1]
    r = positions.index_select(0, dst) - positions.index_select(0, src) + shifts
    rk = r.unsqueeze(0).expand(k, -1, -1).clone().requires_grad_(True)
    atom_e = model.member_atom_energies(rk, edge_index, types)  # [K, N]
    (g,) = torch.autograd.grad([atom_e.sum()], [rk], create_graph=True)
    n = positions.shape[0]
    member_f = torch.zeros((k, n, 3), dtype=r.dtype).index_add(1, src, g).index_add(1, dst, -g)
    member_e = torch.zeros((k, len(batch)), dtype=r.dtype).index_add(1, seg, atom_e)
    ref_e = torch.tensor([s.energy for s in batch], dtype=r.dtype)
    e_term = (((member_e - ref_e) / n_b) ** 2).mean()
    f_err2 = (member_f - torch.cat([s.forces for s in batch])).pow(2).sum(-1).sum(0)  # [N]
    f_term = (f_err2 / (3.0 * k * n_b[seg])).sum() / len(batch)
    return tc["energy_weight"] * e_term + tc["force_weight"] * f_term


def predict(model: EquivariantPotential, structures: List[Structure]) -> Dict[str, np.ndarray]:
    """Committee predictions with the model's *raw* spread (uncertainty scale 1)."""
    saved = model.uncertainty_scale
    model.uncertainty_scale = 1.0
    k = model.ensemble_size
    e_pred, e_ref, n_at, f_pred, f_ref, f_std, e_std = [], [], [], [], [], [], []
    try:
        for s in structures:
            out = model.compute(s.positions, s.types, s.edge_index, s.shifts, s.n_atoms, False, k > 1)
            e_pred.append(float(out["energy"]))
            e_ref.append(s.energy)
            n_at.append(s.n_atoms)
            f_pred.append(out["forces"].detach().double().numpy())
            f_ref.append(s.forces.double().numpy())
            f_std.append(out["forces_std"].detach().double().numpy() if k > 1 else np.zeros(s.n_atoms))
            e_std.append(float(out["energy_std"]) if k > 1 else 0.0)
    finally:
        model.uncertainty_scale = saved
    return {"energy": np.array(e_pred), "energy_ref": np.array(e_ref), "n_atoms": np.array(n_at),
            "forces": np.concatenate(f_pred), "forces_ref": np.concatenate(f_ref),
            "forces_std": np.concatenate(f_std), "energy_std": np.array(e_std)}


def accuracy(pred: Dict[str, np.ndarray]) -> Dict[str, float]:
    de = (pred["energy"] - pred["energy_ref"]) / pred["n_atoms"]
    df = pred["forces"] - pred["forces_ref"]
    rmse = float(np.sqrt(np.mean(df ** 2)))
    std = float(np.std(pred["forces_ref"]))
    return {"energy_rmse_per_atom": float(np.sqrt(np.mean(de ** 2))), "force_rmse": rmse,
            "force_std_ref": std, "force_rmse_over_std": rmse / std if std > 0 else float("nan"),
            "n_structures": int(len(de)), "n_atoms": int(pred["n_atoms"].sum())}


class Trainer:
    def __init__(self, config: Dict[str, Any], log=print):
        self.cfg = config
        self.tc = config["training"]
        self.log = log
        self.out_dir = Path(config["output"]["dir"])
        torch.manual_seed(int(self.tc["seed"]))
        if self.tc["threads"]:
            torch.set_num_threads(int(self.tc["threads"]))
        hp = dict(MODEL_DEFAULTS)
        hp.update(config["model"])
        self.dtype = getattr(torch, hp["dtype"])
        frames = read_frames(config["data"]["train"])
        structures = to_structures(frames, hp["species"], hp["cutoff"], self.dtype, config["data"]["train"])
        self.train_set, self.val_set = split(structures, float(self.tc["val_fraction"]), int(self.tc["seed"]))
        shift, scale, avg_nb = species_statistics(self.train_set, len(hp["species"]))
        init = initial_weights(self.tc["init_from"]) if self.tc["init_from"] else None
        if "avg_num_neighbors" not in config["model"]:
            hp["avg_num_neighbors"] = init[0]["avg_num_neighbors"] if init else round(avg_nb, 3)
        self.hparams = hp
        self.model = EquivariantPotential(**hp)
        self.model.set_species_stats(torch.as_tensor(shift), torch.as_tensor(scale))
        if init:
            check_same_architecture(hp, init[0], self.tc["init_from"])
            self.model.load_state_dict(init[1])  # species shift/scale included: the start is that model
            self.log(f"initial weights from {self.tc['init_from']}")
        self.opt = torch.optim.Adam(self.model.parameters(), lr=float(self.tc["lr"]))
        if self.tc["lr_schedule"] == "cosine":
            self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.opt, T_max=int(self.tc["epochs"]), eta_min=float(self.tc["min_lr"]))
        else:
            self.sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.opt, factor=float(self.tc["lr_factor"]), patience=int(self.tc["lr_patience"]),
                min_lr=float(self.tc["min_lr"]))
        self.epoch = 0
        self.best_val = math.inf
        self.best_state = copy.deepcopy(self.model.state_dict())
        self.bad_epochs = 0
        self.history: List[Dict[str, float]] = []
        self.partial: Dict[str, Any] = {}  # position inside an epoch interrupted by a signal
        self.min_loss = math.inf  # smallest per-structure training loss seen by this process

    RUNAWAY = 1e6  # a structure loss this many times the smallest one seen: the optimisation diverges

    def check_runaway(self, value: float) -> None:
        """Stop a diverging optimisation whose losses stay finite (e.g. a huge learning rate)."""
        from ..runsafe import DivergenceError

        if value > self.RUNAWAY * self.min_loss:
            raise DivergenceError(
                f"the training diverges: the loss ran away at epoch {self.epoch + 1}: {value:.3g}, more than {self.RUNAWAY:g} x "
                f"the smallest seen ({self.min_loss:.3g}); lower training.lr (now "
                f"{self.opt.param_groups[0]['lr']:g}); the last good state is in last.pt (--resume)")
        self.min_loss = min(self.min_loss, value) if value > 0 else self.min_loss

    # ---- checkpoints ----
    def checkpoint(self) -> Dict[str, Any]:
        return {"kind": "mlpot-equivariant-checkpoint", "hparams": self.hparams, "config": self.cfg,
                "state_dict": self.model.state_dict(), "best_state_dict": self.best_state,
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(), "epoch": self.epoch,
                "best_val": self.best_val, "bad_epochs": self.bad_epochs, "history": self.history,
                "uncertainty_scale": self.model.uncertainty_scale, "torch_rng": torch.get_rng_state(),
                "partial_epoch": self.partial}

    def save(self, name: str, ck: Dict[str, Any] = None) -> Path:
        """Write a checkpoint (atomically: temporary file + rename)."""
        return torch_save_atomic(self.checkpoint() if ck is None else ck, self.out_dir / name)

    def resume(self, path: Path) -> None:
        ck = read_checkpoint(path)
        if ck.get("hparams") != self.hparams:
            raise ValueError(f"{path} was trained with different model options; start a new output.dir "
                             "or restore the config it was made with")
        self.model.load_state_dict(ck["state_dict"])
        self.best_state = ck["best_state_dict"]
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        if self.tc["lr_schedule"] == "cosine":  # resumed with more (or fewer) epochs: decay to min_lr at the new end
            self.sched.T_max = int(self.tc["epochs"])
        self.epoch, self.best_val, self.bad_epochs = ck["epoch"], ck["best_val"], ck["bad_epochs"]
        self.history = ck["history"]
        self.partial = ck.get("partial_epoch") or {}
        torch.set_rng_state(ck["torch_rng"])
        self.log(f"resumed from {path} at epoch {self.epoch} (best validation loss {self.best_val:.5g})")

    # ---- loop ----
    def validation_loss(self) -> Dict[str, float]:
        acc = accuracy(predict(self.model, self.val_set))
        return {"val_force_rmse": acc["force_rmse"], "val_energy_rmse": acc["energy_rmse_per_atom"],
                "val_loss": self.tc["force_weight"] * acc["force_rmse"] ** 2
                + self.tc["energy_weight"] * acc["energy_rmse_per_atom"] ** 2}

    def fit(self, progress: bool = True) -> Dict[str, Any]:
        """Train to the end (epochs, early stopping or time budget). ``last.pt`` is written after every
        epoch, every ``checkpoint_minutes`` inside a long epoch and, on SIGINT/SIGTERM, after the current
        optimiser step (then ``RunInterrupted`` is raised); mid-epoch it holds the position inside the epoch,
        so ``--resume`` continues exactly where the run stopped."""
        tc = self.tc
        t_start = time.time()
        bs = int(tc["batch_size"])
        bar = tqdm(total=int(tc["epochs"]), initial=self.epoch, desc="train", unit="epoch", disable=not progress)
        stop_reason = "epochs"
        last_save = time.time()
        with StopSignals() as stop:
            while self.epoch < int(tc["epochs"]):
                self.model.train()
                # one generator per epoch: the order of an epoch does not depend on where a run was resumed
                gen = torch.Generator().manual_seed(int(tc["seed"]) * 100003 + self.epoch)
                order = torch.randperm(len(self.train_set), generator=gen).tolist()
                part, self.partial = self.partial, {}
                total, count = part.get("total", 0.0), part.get("count", 0)
                for b in range(part.get("next", 0), len(order), bs):
                    self.opt.zero_grad(set_to_none=True)
                    batch = order[b:b + bs]
                    joint = [i for i in batch if batchable(self.train_set[i], tc)]
                    groups = [(joint, None)] if joint else []
                    groups += [([i], "single") for i in batch if i not in joint]
                    for members, how in groups:
                        if how is None:  # one call for the energy/force-only structures of the batch
                            loss = batch_loss(self.model, [self.train_set[i] for i in members], tc)
                        else:
                            loss = structure_loss(self.model, self.train_set[members[0]], tc)["total"]
                        value = check_finite(
                            float(loss.detach()), f"the training loss at epoch {self.epoch + 1}",
                            f"lower training.lr (now {self.opt.param_groups[0]['lr']:g}) or check the labels in "
                            f"{self.cfg['data']['train']}; the last good state is in last.pt (--resume)")
                        self.check_runaway(value)
                        (loss * (len(members) / len(batch))).backward()
                        total += value * len(members)
                        count += len(members)
                    self.opt.step()
                    if stop.signum is not None or (
                            tc["checkpoint_minutes"] and time.time() - last_save >= 60.0 * tc["checkpoint_minutes"]):
                        self.partial = {"next": b + bs, "total": total, "count": count}
                        path = self.save("last.pt")
                        self.partial, last_save = {}, time.time()
                        if stop.signum is not None:
                            bar.close()
                            raise stop.interrupted(f"saved {path} at epoch {self.epoch + 1}, structure {count} "
                                                   f"of {len(order)}; continue with `mlpot train CONFIG --resume`")
                self.epoch += 1
                val = self.validation_loss()
                check_finite(val["val_loss"], f"the validation loss at epoch {self.epoch}",
                             f"lower training.lr (now {self.opt.param_groups[0]['lr']:g})")
                if self.tc["lr_schedule"] == "plateau":
                    self.sched.step(val["val_loss"])
                else:
                    self.sched.step()
                lr = self.opt.param_groups[0]["lr"]
                row = {"epoch": self.epoch, "train_loss": total / max(count, 1), "lr": lr,
                       "minutes": (time.time() - t_start) / 60.0, **val}
                self.history.append(row)
                if val["val_loss"] < self.best_val:
                    self.best_val, self.bad_epochs = val["val_loss"], 0
                    self.best_state = copy.deepcopy(self.model.state_dict())
                    self.save("best.pt")
                else:
                    self.bad_epochs += 1
                self.save("last.pt")
                last_save = time.time()
                bar.set_postfix(loss=f"{row['train_loss']:.4g}", val_F=f"{val['val_force_rmse']:.4f}", lr=f"{lr:.1e}")
                bar.update(1)
                if not progress:
                    self.log(json.dumps(row))
                if stop.signum is not None:
                    bar.close()
                    raise stop.interrupted(f"saved {self.out_dir / 'last.pt'} after epoch {self.epoch}; continue "
                                           "with `mlpot train CONFIG --resume`")
                if self.bad_epochs >= int(tc["early_stopping_patience"]):
                    stop_reason = "early stopping"
                    break
                if tc["max_minutes"] and (time.time() - t_start) / 60.0 >= float(tc["max_minutes"]):
                    stop_reason = "time budget"
                    break
        bar.close()
        self.model.load_state_dict(self.best_state)
        self.log(f"training stopped ({stop_reason}) after {self.epoch} epochs; best validation loss "
                 f"{self.best_val:.5g}")
        return {"stop_reason": stop_reason, "epochs": self.epoch}


def initial_weights(path) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """(hyperparameters, state dict) of the model a run starts from (``training.init_from``): a `mlpot train`
    checkpoint (its best weights) or a model exported by `mlpot train`/`mlpot export` (TorchScript with
    ``extra.hparams`` in its metadata)."""
    import warnings

    path = Path(path)
    try:
        with warnings.catch_warnings():  # an exported model is a TorchScript archive: torch.load warns
            warnings.simplefilter("ignore")
            ck = read_checkpoint(path)
    except Exception:  # not a checkpoint: an exported model
        ck = None
    if ck is not None:
        return dict(ck["hparams"]), ck["best_state_dict"]
    from ..model_file import load

    try:
        loaded = load(path)
    except Exception as exc:
        raise ValueError(f"training.init_from {path} is neither a `mlpot train` checkpoint nor an exported model "
                         f"({type(exc).__name__}: {str(exc)[:160]})") from None
    extra = loaded.metadata.get("extra", {})
    if extra.get("architecture") != "mlpot_plugins.models.equivariant.EquivariantPotential" or "hparams" not in extra:
        raise ValueError(f"training.init_from {path} is not an equivariant model exported by `mlpot train` (its "
                         f"metadata has architecture {extra.get('architecture')!r}); start from one of those or "
                         "from a checkpoint (best.pt)")
    hp = dict(extra["hparams"], species=list(loaded.metadata["species"]))
    return hp, {k: v.detach().clone() for k, v in loaded.module.state_dict().items()}


def architecture_options(path) -> Dict[str, Any]:
    """The model options of the start ``path`` (``initial_weights``) that a run continuing it must repeat:
    all but INIT_FREE (dtype, seed and uncertainty scale are the new run's own)."""
    return {k: v for k, v in initial_weights(path)[0].items() if k not in INIT_FREE}


def check_same_architecture(hp: Dict[str, Any], init: Dict[str, Any], path) -> None:
    """``training.init_from`` must describe the model being trained (all but dtype, seed, uncertainty scale)."""
    diff = {k: (hp.get(k), init.get(k)) for k in sorted(set(hp) | set(init)) if k not in INIT_FREE
            and hp.get(k) != init.get(k)}
    if diff:
        raise ValueError(f"training.init_from {path} has a different architecture: "
                         + ", ".join(f"model.{k}={a!r} but the start has {b!r}" for k, (a, b) in diff.items())
                         + "; set these model options to the start's values (or drop init_from)")


def model_from_checkpoint(path, best: bool = True) -> EquivariantPotential:
    ck = read_checkpoint(path)
    model = EquivariantPotential(**ck["hparams"])
    model.load_state_dict(ck["best_state_dict"] if best else ck["state_dict"])
    model.uncertainty_scale = float(ck.get("uncertainty_scale", 1.0))
    return model


def run(config_path, resume: bool = False, progress: bool = True, log=print) -> Dict[str, Any]:
    """Train, calibrate, report and export as described by the YAML config."""
    from .report import final_report

    cfg = load_config(config_path)
    trainer = Trainer(cfg, log=log)
    last = trainer.out_dir / "last.pt"
    if resume:
        if not last.is_file():
            raise FileNotFoundError(f"cannot resume: {last} does not exist (train without --resume first)")
        trainer.resume(last)
    elif last.is_file():
        raise ValueError(f"{trainer.out_dir} already holds a run; pass --resume to continue it or choose a "
                         "new output.dir")
    info = trainer.fit(progress=progress)
    result = final_report(trainer, log=log)
    result.update(info)
    return result
