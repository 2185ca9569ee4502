"""CDW observables: staggered order field, structure factor, domain length, growth exponent, pictures."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import torch
from torch import Tensor

from .params import stagger


def order_field(Q: Tensor) -> Tensor:
    """Staggered CDW order field phi_i = (-1)^(x+y) Q_i: +-A inside the two checkerboard domains."""
    return Q * stagger(Q.shape[-1], Q.dtype, Q.device)


def structure_factor(Q: Tensor) -> Tensor:
    """S(q) = |sum_i Q_i exp(-i q.r_i)|^2 / N on the L x L grid of q = 2 pi (n1, n2) / L -> [..., L, L]."""
    N = Q.shape[-1] * Q.shape[-2]
    return torch.fft.fft2(Q).abs().pow(2) / N


def s_pi_pi(Q: Tensor) -> Tensor:
    """S(pi, pi) / N = (mean of the order field)^2: the checkerboard order parameter squared."""
    return order_field(Q).mean((-1, -2)) ** 2


def domain_length(Q: Tensor, k_max: float = math.pi / 2) -> Tensor:
    """L = 2 pi sum_k S_phi(k) / sum_k |k| S_phi(k) over |k| < k_max, with S_phi the structure factor of
    the order field (peak at k = 0 <=> S(q) peaked at (pi, pi)); k = 0 counts in the denominator sum only
    through S, so a single domain gives L -> infinity (capped at the lattice size)."""
    L = Q.shape[-1]
    S = structure_factor(order_field(Q))
    k = torch.fft.fftfreq(L, dtype=Q.dtype, device=Q.device) * 2 * math.pi
    kabs = torch.sqrt(k[:, None] ** 2 + k[None, :] ** 2)
    win = (kabs < k_max).to(Q.dtype)
    num = (S * win).sum((-1, -2))
    den = (S * win * kabs).sum((-1, -2))
    return torch.clamp(2 * math.pi * num / den.clamp_min(1e-300), max=float(L))


def record_frame(rec: dict, t: float, Q: Tensor) -> None:
    """Append one time of a run record: t, S(pi,pi)/N (mean over the samples and per sample) and the mean
    domain length of the field(s) Q [..., L, L]. The one definition of the recorded observables for
    `mlpot holstein run` and for the trajectories `mlpot holstein analyze` reads (LAMMPS, OpenMM)."""
    sp = s_pi_pi(Q)
    rec["t"].append(float(t))
    rec["s_pi_pi"].append(float(sp.mean()))
    rec["s_pi_pi_per_sample"].append(sp.reshape(-1).tolist())
    rec["domain_length"].append(float(domain_length(Q).mean()))


def growth_exponent(times: Sequence[float], lengths: Sequence[float], t_min: float = None,
                    t_max: float = None) -> Dict[str, float]:
    """Least-squares slope of log L vs log t over [t_min, t_max] (Allen-Cahn predicts 1/2)."""
    if t_min is not None and t_max is not None and not t_min < t_max:
        raise ValueError(f"the fit window is empty: --t-min {t_min:g} is not below --t-max {t_max:g}; give "
                         "t_min < t_max")
    t, l = np.asarray(times, float), np.asarray(lengths, float)
    sel = (t > 0) & np.isfinite(l) & (l > 0)
    if t_min is not None:
        sel &= t >= t_min
    if t_max is not None:
        sel &= t <= t_max
    if sel.sum() < 3:
        raise ValueError(f"need at least 3 positive (t, L) points in the fit window, got {int(sel.sum())}; "
                         "run longer or widen the window")
    x, y = np.log(t[sel]), np.log(l[sel])
    A = np.vstack([x, np.ones_like(x)]).T
    coef, res, *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - A @ coef
    dof = max(1, len(x) - 2)
    cov = np.linalg.inv(A.T @ A) * (resid @ resid) / dof
    return {"exponent": float(coef[0]), "exponent_err": float(math.sqrt(cov[0, 0])),
            "prefactor": float(math.exp(coef[1])), "n_points": int(sel.sum())}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_snapshot(Q: Tensor, path, title: str = "", amplitude: float = None) -> Path:
    """PNG of the staggered order field (red/blue: the two checkerboard domains, white: walls)."""
    plt = _plt()
    phi = order_field(Q.detach().double().cpu()).numpy()
    a = amplitude or max(1e-9, float(np.abs(phi).max()))
    fig, ax = plt.subplots(figsize=(4.2, 3.6), dpi=110)
    im = ax.imshow(phi.T, origin="lower", cmap="RdBu_r", vmin=-a, vmax=a, interpolation="nearest")
    fig.colorbar(im, ax=ax, label=r"$\phi_i = (-1)^{x+y} Q_i$")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x"); ax.set_ylabel("y")
    return _save(plt, fig, path)


def plot_growth(times, lengths, path, fit: Dict[str, float] = None, label: str = "ML", extra=None) -> Path:
    """Log-log L(t) with the fitted power law and the Allen-Cahn t^(1/2) guide."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 3.6), dpi=110)
    t, l = np.asarray(times, float), np.asarray(lengths, float)
    ax.loglog(t, l, "o-", ms=3, label=label)
    for lab, (tt, ll) in (extra or {}).items():
        ax.loglog(tt, ll, "s-", ms=3, label=lab)
    if fit:
        tt = t[t > 0]
        ax.loglog(tt, fit["prefactor"] * tt ** fit["exponent"], "--",
                  label=f"fit: n = {fit['exponent']:.2f} ± {fit['exponent_err']:.2f}")
        ax.loglog(tt, fit["prefactor"] * tt[-1] ** (fit["exponent"] - 0.5) * tt ** 0.5, ":", c="gray",
                  label="Allen-Cahn $t^{1/2}$")
    ax.set_xlabel("time t (1/t_hop)"); ax.set_ylabel("domain length L(t)")
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def plot_spipi(times, s_mean, path, per_sample=None) -> Path:
    """S(pi,pi,t)/N: the mean over seeds with the standard error (and each seed, thin)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 3.6), dpi=110)
    t = np.asarray(times, float)
    if per_sample is not None and len(per_sample) and len(per_sample[0]) > 1:
        s = np.asarray(per_sample, float)
        ax.plot(t, s, lw=0.5, alpha=0.4, c="gray")
        err = s.std(1, ddof=1) / np.sqrt(s.shape[1])
        ax.errorbar(t, s.mean(1), err, fmt="o-", ms=3, capsize=2, label=f"mean of {s.shape[1]} seeds ± s.e.")
    else:
        ax.plot(t, np.asarray(s_mean, float), "o-", ms=3, label="S(π,π)/N")
    ax.set_xlabel("time t (1/t_hop)"); ax.set_ylabel(r"$S(\pi,\pi,t)/N$")
    ax.legend(fontsize=8)
    return _save(plt, fig, path)
