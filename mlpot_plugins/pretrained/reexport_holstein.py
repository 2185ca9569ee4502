"""Re-export Holstein lattice committees with the current model code, keeping their weights and metadata:
``python -m mlpot_plugins.pretrained.reexport_holstein`` rewrites the shipped ones, ``... reexport_holstein
MODEL.pt [...]`` rewrites files you trained (in place). Use it after speed-only changes to model.py, or to give a
file exported before ``compute_lattice_block`` existed that method (contract, Lattice).
``--fallback-radius R [--fallback-moments M]`` adds (or changes) the exact local solver
(``compute_lattice_block_fallback``, contract Lattice fallback); a file that has one keeps it unless
``--no-fallback``. ``mlpot holstein export MODEL ... --out FILE`` is the same with a new output file.

Checked before the old file is replaced: ``compute_lattice`` gives bit-identical results (after a warm-up call), the metadata is
unchanged except ``interaction_range`` (now the block halo) and the fallback fields, the block method equals
``compute_lattice``, and the fallback method with an infinite threshold equals the block method."""
import argparse
import os
from pathlib import Path
from typing import Optional

import torch

from ..cli_types import positive_int
from ..cli_types import positive_float, nonneg_float
from ..holstein.fallback import DEFAULT_MOMENTS, RECOMMENDATION_KEY, recommended_fallback, with_fallback
from ..holstein.params import HolsteinParams, periodic_block
from ..holstein.train import build_model
from ..model_file import export, load

HERE = Path(__file__).resolve().parent


def eager_model(old) -> torch.nn.Module:
    """The eager (nn.Module) model of a loaded Holstein lattice file, with its weights and calibration (in the
    file's dtype; ``.double()`` of it gives a float64 twin for fp64 parity checks), without a fallback solver
    (``with_fallback`` adds one)."""
    meta, extra = old.metadata, old.metadata["extra"]
    if meta["kind"] != "lattice" or "architecture" not in extra or "holstein" not in extra:
        raise ValueError(f"{old.path} is not a Holstein lattice model written by `mlpot holstein train` (kind "
                         f"{meta['kind']!r}, extra {sorted(extra)}); only those can be re-exported from their weights")
    arch = extra["architecture"]
    m = build_model(HolsteinParams.from_dict(extra["holstein"]), arch.get("arch", "conv"), extra["patch"]["radius2"],
                    arch["channels"], arch["hidden"], meta["ensemble_size"], arch["energy_based"])
    m = m.to(old.dtype)
    m.load_state_dict(old.module.state_dict())
    m.uncertainty_scale = meta["uncertainty_scale"]
    return m


def reexport(model: str, out: Optional[str] = None, fallback_radius: Optional[int] = None,
             fallback_moments: Optional[int] = None, no_fallback: bool = False,
             recommend_threshold: Optional[float] = None, recommend_until: Optional[float] = None) -> dict:
    """Re-export a shipped model name or a model file in place (or to ``out``); returns what was checked.
    ``fallback_radius``/``fallback_moments``: add or change the exact local solver (default: keep the file's).
    ``recommend_threshold``/``recommend_until``: the hot-phase fallback the quench tools use by default
    (metadata extra.fallback_default; measure it with benchmarks/holstein_regimes.py); a file keeps its own
    unless given, and loses it with ``no_fallback``."""
    if no_fallback and (fallback_radius or fallback_moments or recommend_threshold):
        raise ValueError("--no-fallback contradicts --fallback-radius/--fallback-moments/--recommend-threshold; "
                         "pass one of them")
    if recommend_until is not None and recommend_threshold is None:
        raise ValueError("--recommend-until needs --recommend-threshold (the recommendation is both)")
    old = load(model)
    target = Path(out) if out is not None else Path(model) if Path(model).is_file() else HERE / f"{model}.pt"
    meta, extra = old.metadata, dict(old.metadata["extra"])
    if no_fallback:
        extra.pop(RECOMMENDATION_KEY, None)
    elif recommend_threshold is not None:
        extra[RECOMMENDATION_KEY] = {"threshold": float(recommend_threshold), "until_time":
                                     None if recommend_until is None else float(recommend_until)}
    m = eager_model(old)
    had = meta.get("fallback") or {}
    if not no_fallback and (had or fallback_radius or fallback_moments):
        m = with_fallback(m, HolsteinParams.from_dict(extra["holstein"]), fallback_radius or had.get("radius", 6),
                          fallback_moments or had.get("n_moments", DEFAULT_MOMENTS))
    gen = torch.Generator().manual_seed(0)
    fields = [torch.randn(2, 12, 12, generator=gen) * 3, torch.randn(24, 24, generator=gen) * 3]
    # compare after one warm-up pass: the TorchScript executor's first (profiling) call of an energy model may
    # round differently (1 float32 ulp) from its later calls, in the old file as in the new one
    refs = [old.module.compute_lattice(Q, True) for Q in fields + fields][len(fields):]
    tmp = target.with_name(f".{target.name}.reexport.pt")
    try:
        export(m, tmp, kind="lattice", name=meta["name"], description=meta["description"],
               references=meta["references"], extra=extra)  # fallback metadata: from the module
        new = load(tmp)
        outs = [new.module.compute_lattice(Q, True) for Q in fields + fields][len(fields):]
        for out, ref in zip(outs, refs):
            assert set(out) == set(ref), (sorted(out), sorted(ref))
            for k in ref:
                assert torch.equal(ref[k], out[k]), f"compute_lattice {k} changed by re-export"
        changed = {k for k in set(meta) | set(new.metadata) if meta.get(k) != new.metadata.get(k)}
        if "extra" in changed:  # only the recommendation may change in extra
            keys = set(meta["extra"]) | set(extra)
            assert {k for k in keys if meta["extra"].get(k) != extra.get(k)} <= {RECOMMENDATION_KEY}
            changed.discard("extra")
        assert changed <= {"interaction_range", "fallback_range", "fallback"}, f"metadata changed: {sorted(changed)}"
        recommended_fallback(new)  # the recommendation reads back
        halo = int(new.metadata["interaction_range"])
        Q = fields[1]
        out = new.compute_lattice_block(periodic_block(Q, halo), halo, True)  # the whole lattice as one block
        block_err = {k: (out[k] - refs[1][k]).abs().max().item() / (1.0 + refs[1][k].abs().max().item())
                     for k in refs[1]}  # relative: the energy is a sum over 576 sites in float32
        assert max(block_err.values()) < 1e-5, f"block method differs from compute_lattice by {block_err}"
        if "fallback" in new.metadata:  # the solver never changes a site below the threshold
            rng = new.metadata["fallback_range"]
            fb = new.compute_lattice_block_fallback(periodic_block(Q, rng), rng, float("inf"))
            assert torch.equal(fb["fallback_mask"], torch.zeros(24, 24, dtype=torch.float64))
            assert torch.allclose(fb["forces"], refs[1]["forces"], rtol=1e-5, atol=1e-5), "fallback method differs"
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    report = {"file": str(target), "interaction_range": [meta["interaction_range"], new.metadata["interaction_range"]],
              "compute_lattice_bit_identical": True, "block_vs_full_max_rel": block_err,
              "fallback": new.metadata.get("fallback"), "fallback_range": new.metadata.get("fallback_range")}
    print("re-exported", report)
    return report


def add_fallback_options(ap) -> None:
    """The solver options of this tool and of `mlpot holstein export`."""
    ap.add_argument("--fallback-radius", type=positive_int, default=None,
                    help="add (or change) the exact local solver: KPM window radius in sites (6: 13x13 windows)")
    ap.add_argument("--fallback-moments", type=positive_int, default=None,
                    help=f"Chebyshev moments of the solver (default {DEFAULT_MOMENTS}, or the file's)")
    ap.add_argument("--no-fallback", action="store_true", help="drop the solver a file carries")
    ap.add_argument("--recommend-threshold", type=positive_float, default=None, metavar="STD",
                    help="record the hot-phase fallback the quench tools use by default: this force-std threshold")
    ap.add_argument("--recommend-until", type=nonneg_float, default=None, metavar="T",
                    help="... falling back only for t < T (default: the whole run)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=["holstein-d4", "holstein-d4-energy"],
                    help="model files or shipped names (default: the shipped Holstein models)")
    add_fallback_options(ap)
    args = ap.parse_args(argv)
    for name in args.models:
        reexport(name, None, args.fallback_radius, args.fallback_moments, args.no_fallback,
                 args.recommend_threshold, args.recommend_until)


if __name__ == "__main__":
    main()
