"""``mlpot holstein lammps``: a ready LAMMPS data file + deck for an L x L Holstein quench.

Conventions (issue 13): ``units lj``, ``atom_style atomic``, ``boundary p p f``, one atom type mapped with
``pair_coeff * * Q``; site (i, j) sits at x = xlo + i a, y = ylo + j a (atom id i L + j + 1, the row-major
order of OpenMM's particles), its displacement Q is the z coordinate.

Unit mapping (``units lj`` with k_B = 1): energy unit = the hopping t, length unit = the displacement unit
of Q (the lattice spacing a only places the sites), mass unit chosen so that the LJ time unit tau is 1/t.
Then the Holstein Langevin equation m Q'' = F - gamma Q' + sqrt(2 gamma kT) eta maps one to one:

    Holstein  m      gamma (friction, force per velocity)   kT                dt
    LAMMPS    mass   fix langevin damp = m / gamma           temperature kT    timestep dt

(LAMMPS' friction force is -(m / damp) v.) The initial state is the one ``mlpot holstein run`` starts
from for the same seed (``dynamics.quench_initial_state``): z = Q, vz = P / m, vx = vy = 0. x and y stay
fixed: the model's x/y forces are 0 and ``fix setforce 0 0 NULL`` (after ``fix langevin``) removes the
thermostat's x/y noise, so the z motion is exactly the Holstein Langevin dynamics (LAMMPS integrates it with
velocity Verlet + Langevin forces, ``mlpot holstein run`` with BAOAB: the same ensemble and kinetics, not
the same noise stream). The temperature in thermo is ``compute temp/partial 0 0 1`` (z only, no removed
degree of freedom): <P^2/m> = kT per site, i.e. thermo temp = kT in equilibrium.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import numpy as np

from ..cli_types import bounded_float, bounded_int
from ..runsafe import atomic_write, atomic_write_text, check_output_dir
from .params import HolsteinParams, check_lattice_size

DATA_NAME, DECK_NAME, INFO_NAME, DUMP_NAME = "holstein.data", "in.holstein", "holstein-lammps.json", "holstein.dump"
# The fallback count per step: LAMMPS' `compute pair` exposes the pair style's extra global values;
# pair_style mlpot (lattice model with `fallback THRESHOLD`) gives [1] = sites that fell back this step.
FALLBACK_THERMO = "c_fb[1]"
Z_MARGIN = 10.0  # z box half height = this many times max(|Q| at t=0, the CDW amplitude)


def lattice_spacing(model) -> float:
    """The model's lattice spacing a (metadata extra.lattice.spacing; 1.0 lattice units if absent)."""
    a = model.metadata.get("extra", {}).get("lattice", {}).get("spacing", 1.0)
    return bounded_float(a, "the model's lattice spacing (extra.lattice.spacing)", 0.0, strict=True)


def check_fallback_model(model, threshold: float) -> float:
    """A fallback threshold needs a committee exported with its exact solver; threshold > 0 and finite."""
    from .. import contract

    method = getattr(contract, "LATTICE_FALLBACK_METHOD", "compute_lattice_block_fallback")
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"--fallback {threshold!r}: the force-std threshold must be a finite number > 0 "
                         "(e.g. --fallback 0.05)")
    if not hasattr(model.module, method):
        raise ValueError(f"{model.path} has no exact local solver ({method}), so LAMMPS cannot fall back: "
                         "re-export the model with its KPM solver (`mlpot holstein export MODEL --fallback-radius 6 --out "
                         "MODEL-fallback.pt`) and use that file, or "
                         "drop --fallback")
    return float(threshold)


def write_lammps_inputs(out_dir, model_ref: str = "holstein-d4", L: int = 64, steps: int = 2000, seed: int = 0,
                        params: Optional[HolsteinParams] = None, fallback="auto",
                        dump_every: int = 50, thermo_every: int = 50, restart_every: int = 500,
                        device: Optional[str] = None, kT_hot: float = 5.0, boundary_z: str = "f",
                        fallback_until: Optional[float] = None) -> dict:
    """Write ``holstein.data`` (the quench's t = 0 state), ``in.holstein`` (the deck) and
    ``holstein-lammps.json`` (parameters, unit mapping, file names: what ``mlpot holstein analyze`` needs)
    into ``out_dir``; return the paths. ``params`` overrides the model's Holstein parameters (m, gamma, dt,
    kT of the thermostat; others warn as in ``mlpot holstein run``). ``fallback``: "auto" (default) = the
    model's recommended hot-phase fallback if it carries one (``fallback.recommended_fallback``), a threshold,
    or None (ML only); ``fallback_until``: the time from which it is off (default: the recommendation's with
    "auto", the whole run with a threshold) -> ``pair_style mlpot ... fallback THR until STEP``."""
    from ..model_file import load as load_model
    from .dynamics import PATCH_WHY, min_lattice, model_params, quench_initial_state, warn_if_untrained

    model = load_model(model_ref)
    trained = model_params(model)  # refuses non-Holstein / non-lattice models with the fix
    p = params or trained
    warning = warn_if_untrained(model, p)
    min_L = min_lattice(model.module)
    L = check_lattice_size(L, min_L, why=PATCH_WHY if min_L > 4 else "")
    steps = bounded_int(steps, "steps", 1)
    dump_every, thermo_every = bounded_int(dump_every, "dump_every", 1), bounded_int(thermo_every, "thermo_every", 1)
    restart_every = bounded_int(restart_every, "restart_every", 1)
    if boundary_z not in ("f", "m"):
        raise ValueError(f"boundary_z={boundary_z!r}: use 'f' (fixed z box) or 'm' (shrink-wrapped with a minimum)")
    if fallback_until is not None:
        fallback_until = bounded_float(fallback_until, "fallback_until", 0.0, strict=False)
    if isinstance(fallback, str):
        if fallback != "auto":
            raise ValueError(f"fallback={fallback!r}: use 'auto', a threshold > 0 or None")
        from .fallback import recommended_fallback

        rec = recommended_fallback(model)
        fallback = None if rec is None else rec["threshold"]
        if rec is not None and fallback_until is None:
            fallback_until = rec["until_time"]
    if fallback is None and fallback_until is not None:
        raise ValueError(f"--fallback-until {fallback_until:g} limits a fallback, but there is none: {model.path.name} "
                         "carries no recommended fallback (metadata extra.fallback_default) or --no-fallback was "
                         "given; pass --fallback THRESHOLD too, or drop --fallback-until")
    if fallback is not None:
        fallback = check_fallback_model(model, fallback)
    if p.gamma <= 0:
        raise ValueError(f"gamma={p.gamma:g}: fix langevin needs a friction > 0 (damp = m/gamma); for NVE "
                         "dynamics edit the deck (drop fix langevin)")
    out_dir = check_output_dir(Path(out_dir), "--out folder")
    for name in (DATA_NAME, DECK_NAME, INFO_NAME):
        if (out_dir / name).exists():
            raise ValueError(f"{out_dir / name} already exists (an earlier deck); choose a new --out folder or "
                             "delete it")
    a = lattice_spacing(model)
    Q0, P0 = (x.double().numpy() for x in quench_initial_state(L, p, seed, 1, kT_hot))
    zmax = Z_MARGIN * max(float(np.abs(Q0).max()), trained.cdw_amplitude())
    model_arg = model_ref if not Path(model_ref).exists() else str(Path(model_ref).resolve())
    write_lattice_data(out_dir / DATA_NAME, Q0, P0 / p.m, p.m, a, zmax,
                       f"Holstein {L}x{L} quench, t = 0 hot state of `mlpot holstein run --seed {seed}` (kT_hot "
                       f"{kT_hot:g})")
    from .fallback import until_step

    fb_until = until_step(fallback_until, p.dt) if fallback is not None else None
    deck = deck_text(model_arg, p, L, steps, seed, fallback, dump_every, thermo_every, restart_every, device,
                     boundary_z, fb_until)
    atomic_write_text(out_dir / DECK_NAME, deck)
    info = {"kind": "mlpot-holstein-lammps", "model": model_arg, "L": L, "spacing": a, "steps": steps,
            "seed": seed, "kT_hot": kT_hot, "params": p.to_dict(), "fallback": fallback,
            "fallback_until_step": fb_until, "dump": DUMP_NAME,
            "dump_every": dump_every, "data": DATA_NAME, "deck": DECK_NAME,
            "unit_mapping": {"mass": p.m, "langevin_damp": p.m / p.gamma, "temperature": p.kT, "timestep": p.dt,
                             "units": "lj: energy t, length = Q unit, time 1/t, k_B = 1"},
            "warnings": [warning] if warning else []}
    atomic_write_text(out_dir / INFO_NAME, json.dumps(info, indent=1))
    return {"data": out_dir / DATA_NAME, "deck": out_dir / DECK_NAME, "info": out_dir / INFO_NAME}


def write_lattice_data(path: Path, Q: np.ndarray, vz: np.ndarray, m: float, a: float, zmax: float,
                       title: str = "Holstein lattice") -> None:
    """LAMMPS atomic data file of an L x L lattice field (issue 13 conventions): site (i, j) = atom i L + j + 1
    at x = i a, y = j a, z = Q[i, j] (17 digits), velocity (0, 0, vz[i, j]); box [0, L a)^2 x [-zmax, zmax]."""
    Q, vz = np.asarray(Q, float), np.asarray(vz, float)
    L = Q.shape[-1]
    i, j = np.meshgrid(np.arange(L), np.arange(L), indexing="ij")  # row-major: id = i L + j + 1
    ids = np.arange(1, L * L + 1)
    atoms = np.column_stack([ids, np.ones(L * L, int), (i * a).ravel(), (j * a).ravel(), Q.ravel()])
    vel = np.column_stack([ids, np.zeros(L * L), np.zeros(L * L), vz.ravel()])
    head = (f"# {title}; site (i,j) = atom i*L+j+1 at x = i*a, y = j*a, Q = z\n\n{L * L} atoms\n1 atom types\n\n"
            f"0 {L * a!r} xlo xhi\n0 {L * a!r} ylo yhi\n{-zmax!r} {zmax!r} zlo zhi\n\nMasses\n\n1 {m!r}\n\n"
            "Atoms # atomic\n\n")

    def write(tmp: Path) -> None:
        with open(tmp, "w") as fh:
            fh.write(head)
            np.savetxt(fh, atoms, fmt=["%d", "%d", "%.17g", "%.17g", "%.17g"])
            fh.write("\nVelocities\n\n")
            np.savetxt(fh, vel, fmt=["%d", "%.17g", "%.17g", "%.17g"])

    atomic_write(path, write)


def deck_text(model_arg: str, p: HolsteinParams, L: int, steps: int, seed: int, fallback: Optional[float],
              dump_every: int, thermo_every: int, restart_every: int, device: Optional[str],
              boundary_z: str = "f", fallback_until_step: Optional[int] = None) -> str:
    pair = f"pair_style mlpot {model_arg}" + (f" device {device}" if device else "") + \
        (f" fallback {fallback!r}" if fallback is not None else "") + \
        (f" until {fallback_until_step}" if fallback is not None and fallback_until_step is not None else "")
    fb = [f"compute fb all pair mlpot          # {FALLBACK_THERMO}: sites that fell back to the exact solver"] \
        if fallback is not None else []
    thermo = "step time temp pe c_u[1] c_u[2]" + (f" {FALLBACK_THERMO}" if fallback is not None else "")
    langevin_seed = 1 + (int(seed) * 7919 + 12345) % 900_000_000  # LAMMPS needs 0 < seed < 2^30
    lines = [
        f"# Holstein {L}x{L} Langevin quench from the hot state of `mlpot holstein run --seed {seed}`",
        "# written by `mlpot holstein lammps`. Run:  lmp -in in.holstein   (or mpiexec -n 4 lmp -in in.holstein)",
        "# continue after an interruption:  lmp -in in.holstein -var continue 1  (reads the newest holstein.restart.*)",
        "# Units (lj, k_B = 1): energy t, length = the Q unit, time 1/t; mass m, damp = m/gamma, T = kT.",
        f"# Holstein parameters: {json.dumps(p.to_dict())}",
        f"variable steps index {steps}",
        "variable continue index 0",
        f"variable seed index {langevin_seed}",
        "units lj",
        "atom_style atomic",
        f"boundary p p {boundary_z}",
        "processors * * 1                  # ranks split x and y only: z holds Q",
        "if \"${continue} > 0\" then \"read_restart holstein.restart.*\" else \"read_data holstein.data\"",
        pair,
        "pair_coeff * * Q",
        "compute u all mlpot/atom          # per site c_u[1] = calibrated force std; global c_u[1] max, c_u[2] mean",
        *fb,
        "compute tz all temp/partial 0 0 1 # the Q (z) temperature: <P^2/m> per site",
        "compute_modify tz extra/dof 0",
        f"fix lv all langevin {p.kT!r} {p.kT!r} {p.m / p.gamma!r} ${{seed}}   # damp = m/gamma",
        "fix xy all setforce 0.0 0.0 NULL  # after langevin: sites stay on the lattice in x, y",
        "fix nve all nve",
        f"timestep {p.dt!r}",
        f"dump q all custom {dump_every} {DUMP_NAME} id x y z vz c_u[1]",
        "dump_modify q sort id append yes format float %.17g",
        f"thermo_style custom {thermo}",
        "thermo_modify temp tz             # temp = the Q (z) temperature; after thermo_style (which resets it)",
        f"thermo {thermo_every}",
        f"restart {restart_every} holstein.restart.*   # checkpoints: one file per {restart_every} steps",
        "run ${steps} upto",
        "write_restart holstein.restart.*",
    ]
    return "\n".join(lines) + "\n"
