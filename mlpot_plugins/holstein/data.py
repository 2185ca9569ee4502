"""Training data: ED Langevin quench trajectories (snapshots of Q and exact electronic forces).

Two kinds of trajectories, batched through one ``eigh`` per step:
* quench: from the hot random state (Q ~ N(0, kT_hot/k0)) at the target kT: early-time kinetics;
* domains: from random checkerboard domains (sign of a smoothed Gaussian field times A (-1)^(x+y)),
  which ED would need ~10^4 steps to reach by coarsening: the domain walls of late-time kinetics.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from .ed import ed_solve
from .langevin import LangevinIntegrator, runaway_limit
from ..cli_types import bounded_int
from ..runsafe import StopSignals, check_output, resume_state, torch_save_atomic
from .params import HolsteinParams, check_lattice_size, hot_random_state, stagger


def domain_state(L: int, n: int, p: HolsteinParams, corr_len: float, generator: torch.Generator,
                 dtype=torch.float64):
    """n random CDW domain configurations with domain size ~ corr_len and thermal momenta."""
    k = torch.fft.fftfreq(L, dtype=dtype) * 2 * torch.pi
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    noise = torch.randn((n, L, L), generator=generator, dtype=dtype)
    smooth = torch.fft.ifft2(torch.fft.fft2(noise) * torch.exp(-0.5 * k2 * corr_len ** 2)).real
    A = p.cdw_amplitude()
    Q = A * stagger(L, dtype) * torch.sign(smooth) + 0.3 * torch.randn((n, L, L), generator=generator, dtype=dtype)
    P = torch.randn((n, L, L), generator=generator, dtype=dtype) * (p.m * p.kT) ** 0.5
    return Q, P


class _RecordingED:
    """ED force callable that keeps the last electronic forces (no second diagonalisation)."""

    def __init__(self, p: HolsteinParams):
        self.p, self.last = p, None

    def __call__(self, Q):
        out = ed_solve(Q, self.p)
        self.last = out["electronic_forces"]
        return out["forces"]


DEFAULT_GENERATE_SAVE_EVERY = 50  # steps between writes of the partial state of `holstein generate`
STATE_KIND = "mlpot-holstein-generate-partial"


def partial_path(out) -> Path:
    """Where ``generate`` keeps the state of an unfinished run (deleted once ``out`` is written)."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def generate(out: Path, L: int = 20, n_quench: int = 6, n_domain: int = 6, quench_steps: int = 800,
             domain_steps: int = 200, stride: int = 8, p: Optional[HolsteinParams] = None, seed: int = 0,
             kT_hot: float = 5.0, progress: bool = True, device: str = "cpu", resume: bool = False,
             save_every: int = DEFAULT_GENERATE_SAVE_EVERY, n_hot: int = 0) -> dict:
    """Run the trajectories and save {Q, f_el, traj, time, kind, params} to ``out`` (torch.save).

    The initial states come from a CPU generator (the same for every device); ``device="cuda"`` runs the
    ED (``eigh``) and the integrator on the GPU, so a device changes only the noise stream and rounding.

    Work is never lost: every ``save_every`` steps and on SIGINT/SIGTERM the snapshots so far and the
    integrator state (Q, P, F, noise generator, step) are written atomically to ``OUT.partial``; a signal
    then raises ``RunInterrupted``. ``resume=True`` continues from it (same options required) and writes
    the same ``out`` bit for bit as an uninterrupted run on the same device; ``OUT.partial`` is deleted at
    the end.

    ``n_hot`` adds that many independent hot random states at t = 0 (the state every quench starts from,
    kind "hot", one trajectory each, ED labels, no dynamics): quench snapshots are kept only from step
    ``stride`` on, so without them the t = 0 regime is not in the data."""
    p = p or HolsteinParams()
    L = check_lattice_size(L)
    n_quench, n_domain = bounded_int(n_quench, "n_quench (--quench)", 0), bounded_int(n_domain, "n_domain (--domains)", 0)
    stride = bounded_int(stride, "stride", 1)
    save_every = bounded_int(save_every, "save_every (--save-every)", 1)
    n_hot = bounded_int(n_hot, "n_hot (--hot)", 0)
    if n_quench + n_domain + n_hot == 0:
        raise ValueError("no trajectories to run: --quench and --domains are both 0; ask for at least one "
                         "(training holds out one trajectory of each kind, so use >= 2 of a kind)")
    for n, steps, opt in ((n_quench, quench_steps, "--steps"), (n_domain, domain_steps, "--domain-steps")):
        if n and bounded_int(steps, opt, 1) < stride:
            raise ValueError(f"{opt}={steps} is shorter than --stride={stride}: no snapshot would be kept; "
                             f"raise {opt} or lower --stride")
    out = check_output(out, "training data")
    partial = partial_path(out)
    config = {"L": L, "quench": n_quench, "domains": n_domain, "steps": quench_steps, "domain_steps": domain_steps,
              "stride": stride, "seed": seed, "kT_hot": float(kT_hot), "device": str(device), **p.to_dict()}
    if n_hot:  # only then: partial files written before the option existed still resume
        config["hot"] = n_hot
    saved = resume_state(partial, STATE_KIND, config, resume, "mlpot holstein generate")
    gen = torch.Generator().manual_seed(seed)
    runs = []
    if n_quench:
        runs.append(("quench",) + hot_random_state(L, (n_quench,), kT_hot, p, gen) + (quench_steps,))
    if n_domain:
        corr = torch.linspace(1.0, L / 4, n_domain).tolist()
        Qd, Pd = zip(*(domain_state(L, 1, p, c, gen) for c in corr))
        runs.append(("domains", torch.cat(Qd), torch.cat(Pd), domain_steps))
    Qs, Fs, traj, times, kinds = ([] if saved is None else saved[k] for k in ("Q", "f_el", "traj", "time", "kinds"))
    offset = 0
    with StopSignals() as stop:
        for index, (kind, Q0, P0, steps) in enumerate(runs):
            if saved is not None and index < saved["run"]:  # finished before the interruption
                offset += Q0.shape[0]
                continue
            rec = _RecordingED(p)
            Q0, P0 = Q0.to(device), P0.to(device)
            if saved is not None and index == saved["run"] and saved["integrator"] is not None:
                st = {k: (v.to(device) if torch.is_tensor(v) and k != "rng" else v)
                      for k, v in saved["integrator"].items()}
                integ = LangevinIntegrator.from_state(st, rec, p)
                integ.q_limit = runaway_limit(p, Q0)  # the same divergence bound as the uninterrupted run
            else:
                integ = LangevinIntegrator(rec, p, Q0, P0, seed=seed + offset + 1)
            bar = tqdm(total=steps, initial=integ.step_count, desc=f"ED {kind} {tuple(Q0.shape)}",
                       disable=not progress)

            def save(integ_state, run_index):
                torch_save_atomic({"kind": STATE_KIND, "config": config, "run": run_index,
                                   "integrator": integ_state, "Q": Qs, "f_el": Fs, "traj": traj, "time": times,
                                   "kinds": kinds}, partial)

            def keep(s, kind=kind, index=index):
                if s.step_count % stride == 0:
                    Qs.append(s.Q.to("cpu", copy=True)); Fs.append(rec.last.to("cpu", copy=True))
                    traj.append(torch.arange(Q0.shape[0]) + offset)
                    times.append(torch.full((Q0.shape[0],), s.time))
                    kinds.extend([kind] * Q0.shape[0])
                bar.update(1)
                if stop.signum is not None or s.step_count % save_every == 0:
                    save(s.state_dict(), index)
                    if stop.signum is not None:
                        bar.close()
                        raise stop.interrupted(
                            f"saved {len(Qs)} snapshot batches and the {kind} trajectories at step {s.step_count} "
                            f"of {steps} in {partial}; to continue, rerun the same command with --resume")

            integ.step(steps - integ.step_count, callback=keep)
            bar.close()
            offset += Q0.shape[0]
            save(None, index + 1)  # this kind is done: a later interruption restarts from the next one
    if n_hot:  # t = 0 hot states: own generator (the trajectories above do not change), chunked ED
        hot_gen = torch.Generator().manual_seed(seed + 1_000_003)
        Qh = hot_random_state(L, (n_hot,), kT_hot, p, hot_gen)[0]
        for chunk in Qh.split(16):
            Qs.append(chunk.clone()); Fs.append(ed_solve(chunk.to(device), p)["electronic_forces"].cpu())
            traj.append(torch.arange(chunk.shape[0]) + offset); offset += chunk.shape[0]
            times.append(torch.zeros(chunk.shape[0])); kinds.extend(["hot"] * chunk.shape[0])
    data = {"Q": torch.cat(Qs), "f_el": torch.cat(Fs), "traj": torch.cat(traj), "time": torch.cat(times),
            "kind": [sys.intern(k) for k in kinds], "params": p.to_dict(), "L": L, "kT_hot": kT_hot, "seed": seed}
    torch_save_atomic(data, out)  # interned kind names: the pickle of a resumed run is the same, byte for byte
    partial.unlink(missing_ok=True)
    return data


def load_data(path) -> dict:
    try:
        d = torch.load(Path(path), weights_only=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"training data {path} does not exist; create it with "
                                f"`mlpot holstein generate --out {path}`") from None
    except Exception as exc:  # truncated or foreign files: zip/pickle errors of every kind
        raise ValueError(f"{path} is not readable Holstein training data ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:120]}); the file is truncated or of another kind: "
                         f"regenerate it with `mlpot holstein generate --out {path}`") from None
    if not isinstance(d, dict) or not {"Q", "f_el", "traj", "params"} <= set(d):
        raise ValueError(f"{path} is not Holstein training data (needs Q, f_el, traj, params); "
                         "create it with `mlpot holstein generate`")
    for key in ("Q", "f_el"):
        if not torch.is_tensor(d[key]) or not torch.isfinite(d[key]).all():
            raise ValueError(f"{path}: {key} holds NaN/inf or is not a tensor; regenerate the data with "
                             "`mlpot holstein generate` (a smaller --param dt if the generation diverged)")
    return d
