"""Which explored frames get labelled.

Scores (``select.score``), from the per-atom calibrated committee force std σ_i of a frame:
* ``max``: max_i σ_i (the quantity the engines' alarms and DP-GEN's model deviation use);
* ``bald``: Σ_i ½ log(1 + σ_i² / s²), the mutual information between a Gaussian label and the committee
  member (BALD) summed over atoms, with s² the model's validation force error per atom (label noise +
  bias proxy): atoms far above the known error count, atoms at it count little.

Modes (``select.mode``):
* ``threshold``: frames with max σ_i > ``threshold``, highest score first;
* ``topk``: the highest scores whatever the threshold;
* ``random``: uniform draws from all explored frames (the baseline of an active-learning benchmark).
All skip frames above ``max_sigma`` (if set) and take at most one frame per walker within
``min_separation`` checks of one already taken (consecutive frames are nearly the same structure).

``select.balance: walkers`` takes the frames round-robin over the walkers (each walker's frames in the mode's
order; walkers in the order of their first frame), so one hot or strained walker cannot take a whole
iteration's labels while the others' regions go unlabelled (a batch of top-k frames is otherwise mostly
near-duplicates of one trajectory); ``none`` (default) takes them in the mode's order only.
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np
from ase import Atoms


def scores(candidates: List[Atoms], score: str, noise: float) -> np.ndarray:
    sig = [np.asarray(a.arrays["forces_std"]) for a in candidates]
    if score == "max":
        return np.array([float(s.max()) for s in sig])
    s2 = max(float(noise), 1e-6) ** 2
    return np.array([float(0.5 * np.log1p(s ** 2 / s2).sum()) for s in sig])


def select(candidates: List[Atoms], settings: Dict, n: int, noise: float, seed: int) -> List[int]:
    """Indices of at most ``n`` candidates to label (in the order chosen)."""
    if n <= 0 or not candidates:
        return []
    smax = np.array([a.info["sigma_max"] for a in candidates])
    ok = np.ones(len(candidates), bool)
    if settings["max_sigma"]:
        ok &= smax <= settings["max_sigma"]
    if settings["mode"] == "threshold":
        ok &= smax > settings["threshold"]
    pool = np.flatnonzero(ok)
    if settings["mode"] == "random":
        order = np.random.default_rng(seed).permutation(pool)
    else:
        sc = scores(candidates, settings["score"], noise)
        order = pool[np.argsort(-sc[pool], kind="stable")]
    if settings.get("balance", "none") == "walkers":
        order = round_robin(order, [candidates[i].info["walker"] for i in order])
    sep = int(settings["min_separation"])
    taken: List[int] = []
    for i in order:
        a = candidates[i]
        if any(candidates[j].info["walker"] == a.info["walker"] and
               abs(candidates[j].info["check"] - a.info["check"]) < sep for j in taken):
            continue
        taken.append(int(i))
        if len(taken) == n:
            break
    return taken


def round_robin(order, groups) -> List[int]:
    """``order`` interleaved over ``groups``: the first of each group (groups in order of first appearance),
    then the second of each, ...; within a group the order is kept."""
    queues: Dict = {}
    for i, g in zip(order, groups):
        queues.setdefault(g, []).append(int(i))
    out: List[int] = []
    for rank in range(max((len(q) for q in queues.values()), default=0)):
        out.extend(q[rank] for q in queues.values() if rank < len(q))
    return out
