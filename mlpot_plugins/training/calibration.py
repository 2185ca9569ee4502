"""Calibration of committee force uncertainties and the metrics reported for them.

Convention: the per-atom force std sigma_i (contract ``forces_std``) covers the c components of the force
errors ``[n, c]`` (3 for atoms, 1 for a lattice site's scalar force), so each error component is modelled as
N(0, (s sigma_i)^2 / c). The scale s minimising the Gaussian NLL on the validation set has the closed form
s^2 = mean(c e_ic^2 / sigma_i^2).
"""
from __future__ import annotations

import math
from typing import Dict

import numpy as np
from scipy import special, stats

SIGMA_FLOOR = 1e-8


def _component_sigma(sigma_atom: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """sigma_i / sqrt(c) for errors [n, c], as a column [n, 1]."""
    c = np.asarray(errors).shape[1]
    return (np.maximum(np.asarray(sigma_atom, dtype=np.float64), SIGMA_FLOOR) / math.sqrt(c))[:, None]


def fit_scale(sigma_atom: np.ndarray, errors: np.ndarray) -> float:
    """NLL-optimal scale for uncalibrated per-atom stds [n] and force errors [n, c]."""
    z2 = (np.asarray(errors) ** 2) / _component_sigma(sigma_atom, errors) ** 2
    return float(math.sqrt(z2.mean()))


def gaussian_nll(sigma_atom: np.ndarray, errors: np.ndarray) -> float:
    """Mean NLL per force component (nats) of the errors under N(0, sigma_i^2/3)."""
    sc = _component_sigma(sigma_atom, errors)
    e = np.asarray(errors)
    return float(np.mean(0.5 * (e / sc) ** 2 + np.log(sc) + 0.5 * math.log(2 * math.pi)))


def calibration_curve(sigma_atom: np.ndarray, errors: np.ndarray, n: int = 41):
    """Expected vs observed fraction of error components inside central Gaussian intervals."""
    z = np.abs(np.asarray(errors) / _component_sigma(sigma_atom, errors)).ravel()
    expected = np.linspace(0.0, 1.0, n)
    bounds = math.sqrt(2.0) * special.erfinv(np.clip(expected, 0.0, 1.0 - 1e-12))
    observed = np.array([(z <= b).mean() for b in bounds])
    return expected, observed


def miscalibration_area(sigma_atom: np.ndarray, errors: np.ndarray) -> float:
    expected, observed = calibration_curve(sigma_atom, errors, n=201)
    return float(np.trapezoid(np.abs(observed - expected), expected))


def uncertainty_metrics(sigma_atom: np.ndarray, errors: np.ndarray) -> Dict[str, float]:
    """Metrics of *calibrated* per-atom stds against force errors [n, c] (c = 3; 1 for lattice sites)."""
    abs_err = np.linalg.norm(errors, axis=1)
    rho = stats.spearmanr(sigma_atom, abs_err).statistic if len(abs_err) > 2 else float("nan")
    return {"nll_per_component": gaussian_nll(sigma_atom, errors),
            "miscalibration_area": miscalibration_area(sigma_atom, errors),
            "spearman_sigma_vs_abs_error": float(rho),
            "median_force_std": float(np.median(sigma_atom)),
            "rms_z": float(np.sqrt(np.mean(np.asarray(errors) ** 2 / _component_sigma(sigma_atom, errors) ** 2)))}
