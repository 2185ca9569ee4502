"""Train a D4 committee on ED data, calibrate its uncertainty on held-out trajectories and export it."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from .. import export as mlpot_export
from ..cli_types import bounded_float, bounded_int
from ..runsafe import StopSignals, check_finite, check_output, resume_state, torch_save_atomic
from .data import load_data
from .irreps import D4IrrepsForceField
from .model import D4LatticeForceField
from .params import HolsteinParams, elastic_force

DEFAULT_SAVE_MINUTES = 5.0  # minutes between writes of the training state (also on SIGINT/SIGTERM)
STATE_KIND = "mlpot-holstein-train-state"
REFERENCES = ["Equivariant Neural Networks for Force-Field Models of Lattice Systems (2026)",
              "T. Holstein, Ann. Phys. 8, 325 (1959)"]


LEARN_KIND = "learn"  # single fields labelled by `mlpot learn` (holstein/learn.py): always trained on


def split(data: dict):
    """Hold out the last trajectory of each kind (whole trajectories, so no time-correlated leakage); frames
    of kind ``learn`` (single fields labelled by ``mlpot learn``) are always trained on."""
    kinds = data.get("kind") or ["quench"] * len(data["traj"])
    held = set()
    for kind in set(kinds) - {LEARN_KIND}:
        held.add(max(int(t) for t, k in zip(data["traj"], kinds) if k == kind))
    test = torch.tensor([int(t) in held for t in data["traj"]])
    return ~test, test


def evaluate(model: D4LatticeForceField, Q: torch.Tensor, f_el: torch.Tensor, p: HolsteinParams,
             batch: int = 32) -> dict:
    """Held-out committee errors on the electronic and the total force."""
    preds, stds = [], []
    for i in range(0, len(Q), batch):
        out = model.compute_lattice(Q[i:i + batch], True)
        preds.append(out["forces"].detach().double())
        stds.append(out.get("forces_std", torch.zeros_like(out["forces"])).detach().double())
    pred, std = torch.cat(preds), torch.cat(stds)
    total = f_el + elastic_force(Q.double(), p)
    err = pred - total
    rmse = err.pow(2).mean().sqrt().item()
    return {"rmse": rmse, "force_std": total.std().item(), "electronic_force_std": f_el.std().item(),
            "rmse_over_force_std": rmse / total.std().item(),
            "rmse_over_electronic_force_std": rmse / f_el.std().item(),
            "mean_committee_std": std.pow(2).mean().sqrt().item(), "n_sites": err.numel(),
            "_err": err, "_std": std}


def train(data_path, out_path, energy_based: bool = False, ensemble_size: int = 4, channels: int = 16,
          hidden: int = 32, radius2: int = 13, epochs: int = 60, batch: int = 16, lr: float = 3e-3,
          seed: int = 0, name: str = "holstein-d4", progress: bool = True,
          time_budget_s: Optional[float] = None, snapshot_stride: int = 1, device: str = "cpu",
          state_dict_path=None, init_state_dict=None, arch: str = "conv", resume: bool = False,
          save_minutes: float = DEFAULT_SAVE_MINUTES, state_path=None) -> dict:
    """Train, calibrate and export; ``device="cuda"`` trains on the GPU (the export is always on CPU) and
    ``state_dict_path`` also saves the weights (to re-export them with another torch version);
    ``init_state_dict`` starts from such saved weights (fine-tuning, e.g. on CPU after a GPU run).
    ``arch``: "conv" (D4 group convolution, model.py) or "irreps" (irreps features, irreps.py).

    Work is never lost: every ``save_minutes`` (checked after each optimiser step; 0: after every epoch), and
    on SIGINT/SIGTERM after the current step, the model, optimiser, RNG, epoch, step, the epoch's order and
    the loss history are written atomically to ``state_path`` (default ``OUT.ckpt``); a signal then raises
    ``RunInterrupted``. ``resume=True`` continues from it (same options and data required): without a time
    budget on CPU the exported model equals an uninterrupted run's. ``time_budget_s`` is the total training
    time over all parts of a resumed run (the saved time counts). ``state_path`` is deleted at the end."""
    for value, opt in ((ensemble_size, "ensemble"), (channels, "channels"), (hidden, "hidden"),
                       (radius2, "radius2"), (epochs, "epochs"), (batch, "batch"), (snapshot_stride, "snapshot_stride")):
        bounded_int(value, opt, 1)
    lr = bounded_float(lr, "lr", 0.0, strict=False)
    if time_budget_s is not None:
        bounded_float(time_budget_s, "time_budget_s (--budget)", 0.0, strict=True)
    check_output(out_path, "model")  # before the work: a missing or unwritable folder fails now
    if state_dict_path is not None:
        check_output(state_dict_path, "weights file")
    data = load_data(data_path)
    p = HolsteinParams.from_dict(data["params"])
    state_path = Path(state_path) if state_path is not None else Path(out_path).with_suffix(".ckpt")
    save_minutes = bounded_float(save_minutes, "save_minutes (--save-minutes)", 0.0, strict=False)
    run_config = dict(data_path=str(data_path), data_fingerprint=_fingerprint(data), energy_based=energy_based,
                  ensemble_size=ensemble_size, channels=channels, hidden=hidden, radius2=radius2, epochs=epochs,
                  batch=batch, lr=float(lr), seed=seed, snapshot_stride=snapshot_stride, arch=arch,
                  init=None if init_state_dict is None else str(init_state_dict))
    saved = resume_state(check_output(state_path, "training state"), STATE_KIND, run_config, resume,
                         "mlpot holstein train")
    torch.manual_seed(seed)
    model = build_model(p, arch, radius2, channels, hidden, ensemble_size, energy_based, seed)
    if arch == "irreps":
        model.fit_scales(data["Q"][:64].float())
    if init_state_dict is not None and saved is None:
        load_weights(model, init_state_dict)
    model = model.to(device)
    L = int(data["L"])
    if L < 2 * model.R + 1:
        raise ValueError(f"training lattice L={L} is smaller than the patch (need L >= {2 * model.R + 1}); "
                         "generate data on a larger lattice or lower --radius2")
    tr, te = split(data)
    if snapshot_stride > 1:  # consecutive snapshots are strongly correlated: thin the training set
        keep = torch.zeros_like(tr)
        keep[::snapshot_stride] = True
        tr = tr & keep
    Qtr, Ftr = data["Q"][tr].float().to(device), data["f_el"][tr].float().to(device)
    K, S = ensemble_size, len(Qtr)
    if S == 0:
        raise ValueError(f"{data_path} leaves no training snapshots: training holds out the last trajectory of "
                         "each kind for validation, so generate at least 2 trajectories of a kind "
                         "(e.g. `mlpot holstein generate --quench 2 --domains 2`)")
    # bootstrap weights: each member sees its own resample of the training snapshots (explicit dtype: the same
    # draw whatever the default dtype of the process, so a resumed run draws what the interrupted one drew)
    gen = torch.Generator().manual_seed(seed + 1)
    boot = torch.ones(K, S) if K == 1 else \
        torch.multinomial(torch.ones(S, dtype=torch.float32), K * S, replacement=True, generator=gen).reshape(K, S)
    weights = (torch.stack([torch.bincount(b, minlength=S).float() for b in boot]) if K > 1 else boot).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n_batches = math.ceil(S / batch)
    total_steps = epochs * n_batches
    step, start_epoch, start_batch, perm, tot, history, done_s = 0, 0, 0, None, 0.0, [], 0.0
    on_cuda = torch.device(device).type == "cuda"
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])
        if saved.get("cuda_rng") is not None and on_cuda:
            torch.cuda.set_rng_state(saved["cuda_rng"], device)
        step, start_epoch, start_batch, tot = saved["step"], saved["epoch"], saved["next_batch"], saved["epoch_loss"]
        perm, history, done_s = saved["perm"].to(device), list(saved["history"]), saved["train_seconds"]
    t0 = time.time() - done_s  # the budget counts the training time of every part of a resumed run

    def set_lr():  # cosine decay over the epochs or the time budget, whichever runs out first
        frac = step / total_steps
        if time_budget_s:
            frac = max(frac, (time.time() - t0) / time_budget_s)
        for grp in opt.param_groups:
            grp["lr"] = lr / 30 + (lr - lr / 30) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))

    def save_state(ep, next_batch):
        torch_save_atomic({"kind": STATE_KIND, "config": run_config, "model": model.state_dict(),
                           "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(), "step": step,
                           "cuda_rng": torch.cuda.get_rng_state(device) if on_cuda else None,  # randperm on GPU
                           "epoch": ep, "next_batch": next_batch, "perm": perm.cpu(), "epoch_loss": tot,
                           "history": history, "train_seconds": time.time() - t0}, state_path)
        return time.time()

    bar = tqdm(range(start_epoch, epochs), initial=start_epoch, total=epochs, desc=f"train {name}",
               disable=not progress)
    last_save = time.time()
    with StopSignals() as stop:
        for ep in bar:
            if perm is None or start_batch == 0:
                perm = torch.randperm(S, device=device)
                tot = 0.0
            for i in range(start_batch, n_batches):
                idx = perm[i * batch:(i + 1) * batch]
                f, _ = model.member_forces(Qtr[idx], create_graph=energy_based)  # [K, b, L, L]
                w = weights[:, idx][:, :, None, None]
                # clamp: a small batch can hold only snapshots no member's bootstrap drew (0/0 = nan)
                loss = ((f - Ftr[idx]) ** 2 * w).sum() / (w.sum().clamp_min(1.0) * L * L)
                set_lr()
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                tot += check_finite(loss.item(), f"the training loss at epoch {ep + 1}",
                                    f"lower --lr (now {lr:g}) or check the data {data_path} (regenerate it with "
                                    "`mlpot holstein generate`)")
                if i + 1 < n_batches and (stop.signum is not None or (
                        save_minutes and time.time() - last_save >= 60.0 * save_minutes)):
                    last_save = save_state(ep, i + 1)  # inside a long epoch: continue at the next batch
                    if stop.signum is not None:
                        raise stop.interrupted(f"saved {state_path} at epoch {ep + 1}, step {step}; to continue, "
                                               "rerun the same command with --resume")
            start_batch = 0
            history.append(math.sqrt(tot / n_batches))
            bar.set_postfix(rmse=f"{history[-1]:.4f}")
            out_of_time = bool(time_budget_s and time.time() - t0 > time_budget_s)
            if stop.signum is not None or (not out_of_time and ep + 1 < epochs and (
                    not save_minutes or time.time() - last_save >= 60.0 * save_minutes)):
                last_save = save_state(ep + 1, 0)
                if stop.signum is not None:
                    raise stop.interrupted(f"saved {state_path} after epoch {ep + 1} of {epochs}; to continue, "
                                           "rerun the same command with --resume")
            if out_of_time:
                break
    train_s = time.time() - t0
    metrics = evaluate(model, data["Q"][te].float().to(device), data["f_el"][te].to(device), p)
    err, std = metrics.pop("_err"), metrics.pop("_std")
    check_finite(metrics["rmse"], "the held-out force RMSE", f"lower --lr (now {lr:g}); the model diverged")
    model = model.cpu()
    if ensemble_size > 1:  # calibrate: mean predicted variance = mean squared error on held-out data
        model.uncertainty_scale = float(err.pow(2).mean().sqrt() / std.pow(2).mean().sqrt().clamp_min(1e-12))
    metrics.update(train_seconds=round(train_s, 1), epochs_run=len(history),
                   train_rmse_electronic=history[-1], uncertainty_scale=model.uncertainty_scale,
                   train_snapshots=int(S), snapshot_stride=snapshot_stride, test_snapshots=int(te.sum()), data_L=L)
    config = dict(arch=arch, radius2=radius2, channels=channels, hidden=hidden, ensemble_size=ensemble_size,
                  energy_based=energy_based, name=name, data_L=L, holstein=p.to_dict())
    if state_dict_path is not None:
        torch_save_atomic({"state_dict": model.state_dict(), "uncertainty_scale": model.uncertainty_scale,
                           "metrics": metrics, "config": config}, state_dict_path)
    export_committee(model, out_path, config, metrics)
    state_path.unlink(missing_ok=True)
    return metrics


def _fingerprint(data: dict) -> str:
    """A cheap identity of the training data (a resume must train on the same snapshots)."""
    Q, F = data["Q"].double(), data["f_el"].double()
    return f"{tuple(Q.shape)} {Q.sum().item():.17g} {F.sum().item():.17g} {(Q * F).sum().item():.17g}"


def load_weights(model, path) -> dict:
    """Load weights saved by ``train(state_dict_path=...)`` into ``model``; clear errors for a wrong file."""
    saved = read_saved(path)
    try:
        model.load_state_dict(saved["state_dict"])
    except RuntimeError as exc:
        cfg = saved.get("config", {})
        raise ValueError(f"the weights in {path} do not fit this model (they were trained as "
                         f"{ {k: cfg.get(k) for k in ('arch', 'channels', 'hidden', 'ensemble_size')} }); "
                         f"use the same --arch/--channels/--hidden/--ensemble: {str(exc).splitlines()[0]}") from None
    return saved


def read_saved(path) -> dict:
    """The dictionary saved by ``train(state_dict_path=...)``; clear errors for a missing or wrong file."""
    try:
        saved = torch.load(path, weights_only=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"weights file {path} does not exist; `mlpot holstein train` writes one "
                                "next to its model (MODEL.sd)") from None
    except Exception as exc:  # truncated or foreign files
        raise ValueError(f"{path} is not a readable weights file ({type(exc).__name__}); it is truncated or of "
                         "another kind: pass the MODEL.sd written by `mlpot holstein train`") from None
    if not isinstance(saved, dict) or "state_dict" not in saved:
        raise ValueError(f"{path} holds no saved Holstein weights (expected the .sd file written by training)")
    return saved


def build_model(p: HolsteinParams, arch: str = "conv", radius2: int = 13, channels: int = 16, hidden: int = 32,
                ensemble_size: int = 4, energy_based: bool = False, seed: int = 0):
    if arch == "conv":
        return D4LatticeForceField(p.to_dict(), radius2=radius2, channels=channels, hidden=hidden,
                                   ensemble_size=ensemble_size, energy_based=energy_based, seed=seed)
    if arch == "irreps":
        if energy_based:
            raise ValueError("the irreps-feature model is direct-force only; use arch='conv' for --energy")
        return D4IrrepsForceField(p.to_dict(), radius2=radius2, hidden=hidden, ensemble_size=ensemble_size,
                                  seed=seed)
    raise ValueError(f"unknown arch {arch!r}; use 'conv' or 'irreps'")


def export_committee(model, out_path, config: dict, metrics: dict):
    """Export a trained lattice committee with its Hamiltonian, lattice, patch, architecture and metrics."""
    p = HolsteinParams.from_dict(config["holstein"])
    L, energy_based = config["data_L"], config["energy_based"]
    extra = {"holstein": p.to_dict(), "lattice": {"type": "square", "boundary": "periodic", "trained_L": L},
             "patch": {"radius2": config["radius2"], "n_sites": model.n_patch}, "architecture": {
                 k: config[k] for k in ("arch", "channels", "hidden", "energy_based")},
             "training": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in metrics.items()}}
    kind_txt = "energy-based (forces = -dE/dQ)" if energy_based else "direct-force"
    return mlpot_export(model, out_path, kind="lattice", name=config["name"],
                        description=f"D4-equivariant {kind_txt} committee of {config['ensemble_size']} for the "
                                    f"Holstein model (g={p.g}, kT={p.kT}), trained on ED Langevin trajectories on "
                                    f"{L}x{L}; built by mlpot_plugins/pretrained/build_holstein.py",
                        references=REFERENCES, extra=extra)


def export_saved(state_dict_path, out_path, config: Optional[dict] = None):
    """Export weights saved by ``train(state_dict_path=...)`` (e.g. trained with another torch version)."""
    saved = read_saved(state_dict_path)
    config = config or saved["config"]
    model = build_model(HolsteinParams.from_dict(config["holstein"]), config["arch"], config["radius2"],
                        config["channels"], config["hidden"], config["ensemble_size"], config["energy_based"])
    load_weights(model, state_dict_path)
    model.uncertainty_scale = float(saved["uncertainty_scale"])
    return export_committee(model, out_path, config, saved["metrics"])


def weights_from_export(model_path, state_dict_path) -> Path:
    """Write the weights file (.sd, as ``train(state_dict_path=...)`` does) of an exported D4 committee. The
    shipped .pt files come without their .sd; this recovers it to fine-tune a shipped model (``init_state_dict``)."""
    from ..model_file import load
    from ..pretrained.reexport_holstein import eager_model

    loaded = load(model_path)
    model = eager_model(loaded)  # refuses files that `mlpot holstein train` did not write
    meta, ex = loaded.metadata, loaded.metadata["extra"]
    arch = ex["architecture"]
    config = dict(arch=arch.get("arch", "conv"), radius2=ex["patch"]["radius2"], channels=arch["channels"],
                  hidden=arch["hidden"], ensemble_size=meta["ensemble_size"], energy_based=arch["energy_based"],
                  name=meta["name"], data_L=ex.get("lattice", {}).get("trained_L"), holstein=ex["holstein"])
    return torch_save_atomic({"state_dict": model.state_dict(), "uncertainty_scale": float(model.uncertainty_scale),
                              "metrics": dict(ex.get("training", {})), "config": config}, state_dict_path)
