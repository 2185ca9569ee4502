"""Uncertainty of MD observables from a committee, by reweighting the driving trajectory to each member.

A trajectory sampled with the committee mean potential E_mean is reweighted to member k with

    w_k(t) = exp(-beta (E_k(t) - E_mean(t))) / sum_t' exp(-beta (E_k(t') - E_mean(t')))

(exact importance weights for a canonical trajectory at temperature T, beta = 1/(k_B T); the constant
shifts cancel in the normalisation). An observable's per-member values (here a histogram) then give a
distribution over plausible models; its spread is the model uncertainty of the observable. With a
committee of K members the interval reported is the mean +- ``z`` x the std over members (Gaussian
approximation; z = 1.96 for 95 %), and the min-max envelope over members.

For alanine dipeptide the observable is the phi/psi (Ramachandran) histogram; ``PHI``/``PSI`` are the
atom quadruplets of ``mlpot_plugins.xtb_data`` (its atom order, which ``examples/ala2.pdb`` shares).
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

from .xtb_data import PHI, PSI

KB_EV_PER_K = 8.617333262e-5  # Boltzmann constant, eV/K (CODATA 2018, exact from SI 2019)


def _finite_array(values, name: str, ndim: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {arr.shape}; see mlpot_plugins/observables.py")
    if arr.size == 0:
        raise ValueError(f"{name} is empty; run the trajectory for at least one frame")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN/inf values; drop the broken frames (or rerun the trajectory)")
    return arr


def dihedrals(positions, quad: Sequence[int]) -> np.ndarray:
    """Dihedral angle (degrees, in (-180, 180]) of atoms ``quad`` = (a, b, c, d) for positions [T, N, 3] or
    [N, 3]; IUPAC sign convention (as ``ase.Atoms.get_dihedral`` up to the 360-degree wrap)."""
    pos = np.asarray(positions, dtype=np.float64)
    single = pos.ndim == 2
    pos = _finite_array(pos[None] if single else pos, "positions", 3)
    if pos.shape[-1] != 3:
        raise ValueError(f"positions must have shape [frames, atoms, 3], got {pos.shape}")
    if len(quad) != 4 or len(set(int(i) for i in quad)) != 4:
        raise ValueError(f"a dihedral needs 4 different atom indices, got {list(quad)}")
    if max(quad) >= pos.shape[1] or min(quad) < 0:
        raise ValueError(f"dihedral atoms {list(quad)} out of range for {pos.shape[1]} atoms")
    a, b, c, d = (pos[:, int(i)] for i in quad)
    b0, b1, b2 = a - b, c - b, d - c
    b1n = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - np.sum(b0 * b1n, axis=-1, keepdims=True) * b1n
    w = b2 - np.sum(b2 * b1n, axis=-1, keepdims=True) * b1n
    x = np.sum(v * w, axis=-1)
    y = np.sum(np.cross(b1n, v) * w, axis=-1)
    angle = np.degrees(np.arctan2(y, x))
    angle = np.where(angle <= -180.0, angle + 360.0, angle)
    return angle[0] if single else angle


def ala2_phi_psi(positions) -> Tuple[np.ndarray, np.ndarray]:
    """Backbone phi (C(ACE)-N-CA-C) and psi (N-CA-C-N(NME)) of alanine dipeptide, degrees, xTB-set atom order."""
    return dihedrals(positions, PHI), dihedrals(positions, PSI)


def member_weights(member_energy, temperature: float) -> np.ndarray:
    """Reweighting of a committee-mean trajectory to each member: [K, T] weights, each row summing to 1.

    ``member_energy`` [T, K] (eV): each member's energy on each frame; ``temperature`` in K."""
    e = _finite_array(member_energy, "member_energy [frames, members]", 2)
    if e.shape[1] < 2:
        raise ValueError(f"member_energy has {e.shape[1]} member column(s); reweighting needs a committee "
                         "(ensemble_size > 1): pass the [frames, members] energies")
    from .cli_types import bounded_float

    try:
        temperature = bounded_float(temperature, "temperature (K)", 0.0, strict=True)
    except ValueError as exc:
        raise ValueError(f"{exc}; pass the trajectory's thermostat temperature in kelvin") from None
    beta = 1.0 / (KB_EV_PER_K * temperature)
    log_w = -beta * (e - e.mean(axis=1, keepdims=True))  # [T, K]
    log_w -= log_w.max(axis=0, keepdims=True)
    w = np.exp(log_w)
    return (w / w.sum(axis=0, keepdims=True)).T


def effective_sample_size(weights) -> np.ndarray:
    """Kish effective number of frames per member, 1 / sum w^2 ([K]); small values: the reweighting is unreliable."""
    w = _finite_array(weights, "weights [members, frames]", 2)
    return 1.0 / np.sum(w ** 2, axis=1)


def histogram2d(phi, psi, weights=None, bins: int = 36) -> np.ndarray:
    """Normalised phi/psi histogram(s) on [-180, 180)^2: [bins, bins], or [K, bins, bins] for weights [K, T]."""
    phi = _finite_array(phi, "phi", 1)
    psi = _finite_array(psi, "psi", 1)
    if phi.shape != psi.shape:
        raise ValueError(f"phi and psi must have the same number of frames, got {phi.shape[0]} and {psi.shape[0]}")
    from .cli_types import bounded_int

    bins = bounded_int(bins, "bins", 1)
    edges = np.linspace(-180.0, 180.0, bins + 1)

    def one(w):
        h, _, _ = np.histogram2d(phi, psi, bins=[edges, edges], weights=w)
        return h / h.sum()

    if weights is None:
        return one(None)
    w = _finite_array(weights, "weights [members, frames]", 2)
    if w.shape[1] != phi.shape[0]:
        raise ValueError(f"weights cover {w.shape[1]} frames but phi/psi {phi.shape[0]}; pass the weights of this "
                         "trajectory (member_weights of its member energies)")
    return np.stack([one(row) for row in w])


def credible_interval(member_values, z: float = 1.96) -> Dict[str, np.ndarray]:
    """Mean, std, mean -/+ z std (clipped at 0) and min/max over the member axis (axis 0)."""
    v = _finite_array(member_values, "member_values", np.ndim(member_values))
    if v.shape[0] < 2:
        raise ValueError("credible intervals need the values of at least 2 committee members (axis 0)")
    mean, std = v.mean(axis=0), v.std(axis=0, ddof=1)
    return {"mean": mean, "std": std, "lower": np.maximum(mean - z * std, 0.0), "upper": mean + z * std,
            "min": v.min(axis=0), "max": v.max(axis=0)}


def jensen_shannon(p, q) -> float:
    """Jensen-Shannon divergence (bits, in [0, 1]) between two histograms (normalised here)."""
    p = _finite_array(p, "p", np.ndim(p)).ravel()
    q = _finite_array(q, "q", np.ndim(q)).ravel()
    if p.shape != q.shape:
        raise ValueError(f"histograms of different binning: {p.size} vs {q.size} bins; use the same bins")
    if (p < 0).any() or (q < 0).any() or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("histograms must be non-negative with a positive total")
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(a):
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    return 0.5 * kl(p) + 0.5 * kl(q)


def plot_ramachandran(phi, psi, member_hists, path, reference=None, title: str = "", z: float = 1.96) -> None:
    """PNG: the trajectory's phi/psi histogram, the committee's relative uncertainty per bin, and the
    phi and psi marginals with their member credible bands (``reference``: (phi, psi) of a reference run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hists = np.asarray(member_hists)
    bins = hists.shape[-1]
    edges = np.linspace(-180.0, 180.0, bins + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    ci = credible_interval(hists, z)
    fig, ax = plt.subplots(1, 4, figsize=(18, 4.2))
    h = histogram2d(phi, psi, bins=bins)
    im = ax[0].imshow(np.where(h > 0, h, np.nan).T, origin="lower", extent=[-180, 180, -180, 180], cmap="viridis")
    fig.colorbar(im, ax=ax[0], label="probability per bin")
    ax[0].set_title("ML-driven trajectory")
    rel = np.where(ci["mean"] > 1e-4, ci["std"] / np.maximum(ci["mean"], 1e-12), np.nan)
    im = ax[1].imshow(rel.T, origin="lower", extent=[-180, 180, -180, 180], cmap="magma")
    fig.colorbar(im, ax=ax[1], label="member std / mean")
    ax[1].set_title("committee relative uncertainty")
    all_phi = np.concatenate([np.ravel(phi)] + ([np.ravel(reference[0])] if reference is not None else []))
    all_psi = np.concatenate([np.ravel(psi)] + ([np.ravel(reference[1])] if reference is not None else []))
    for a in ax[:2]:  # zoom on the sampled region
        a.set_xlim(max(all_phi.min() - 20, -180), min(all_phi.max() + 20, 180))
        a.set_ylim(max(all_psi.min() - 20, -180), min(all_psi.max() + 20, 180))
        a.set_xlabel("phi [deg]")
        a.set_ylabel("psi [deg]")
    for k, (a, axis, name) in enumerate(((ax[2], 1, "phi"), (ax[3], 0, "psi"))):
        marg = hists.sum(axis=axis + 1)  # [K, bins]
        mci = credible_interval(marg, z)
        a.fill_between(centres, mci["lower"], mci["upper"], alpha=0.35, label=f"members mean +- {z:g} std")
        a.plot(centres, mci["mean"], label="reweighted mean")
        a.plot(centres, h.sum(axis=axis), "k--", lw=0.8, label="unweighted")
        if reference is not None:
            ref = histogram2d(reference[0], reference[1], bins=bins)
            a.plot(centres, ref.sum(axis=axis), "r:", label="xTB-driven")
        a.set_xlabel(f"{name} [deg]")
        a.set_ylabel("probability per bin")
        a.legend(fontsize=7)
        occupied = np.nonzero(mci["upper"] > 1e-4)[0]
        if occupied.size:
            a.set_xlim(edges[max(occupied[0] - 2, 0)], edges[min(occupied[-1] + 3, bins)])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
