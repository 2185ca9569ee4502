"""The domain-decomposable lattice contract (``compute_lattice_block``): any split of a periodic lattice into
rectangular blocks with a halo >= the metadata ``interaction_range`` gives ``compute_lattice``'s forces,
member forces, calibrated std and energy; the recorded range is tight; too small a halo and old files
without the method fail clearly; the shipped files carry the method."""
import pytest
import torch

import mlpot_plugins
from mlpot_plugins.contract import LATTICE_BLOCK_METHOD, ModelFormatError
from mlpot_plugins.holstein.irreps import D4IrrepsForceField
from mlpot_plugins.holstein.model import D4LatticeForceField
from mlpot_plugins.holstein.params import HolsteinParams, periodic_block
from mlpot_plugins.model_file import check_module_against_metadata

P = HolsteinParams().to_dict()
L = 20
VARIANTS = {"direct": 3, "energy": 6, "irreps": 3}  # variant -> minimal halo for radius2 = 13 (R = 3)
SPLITS = {  # (row cuts, column cuts) of the 20 x 20 lattice
    "whole": ([0, 20], [0, 20]),
    "2x2": ([0, 10, 20], [0, 10, 20]),
    "3x1": ([0, 7, 14, 20], [0, 20]),
    "uneven": ([0, 3, 20], [0, 1, 9, 20]),  # blocks of 1 to 17 sites across, non-square
}


def build(variant):
    if variant == "irreps":
        m = D4IrrepsForceField(P, hidden=8, ensemble_size=3, dtype=torch.float64)
        m.fit_scales(field(L=9, seed=7))
        return m
    return D4LatticeForceField(P, channels=4, hidden=8, ensemble_size=3, energy_based=variant == "energy",
                               dtype=torch.float64)


def field(L=L, seed=0, batch=(2,)):
    return torch.randn(tuple(batch) + (L, L), generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """variant -> (eager model, loaded exported file)"""
    out = {}
    for variant in VARIANTS:
        torch.manual_seed(1)
        m = build(variant)
        path = mlpot_plugins.export(m, tmp_path_factory.mktemp(variant) / "m.pt", kind="lattice", extra={"holstein": P})
        out[variant] = (m, mlpot_plugins.load(path))
    return out


def block_of(Q, x0, x1, y0, y1, h):
    """Sites [x0 - h, x1 + h) x [y0 - h, y1 + h) of the periodic lattice Q, as one open block."""
    return periodic_block(Q, h, x0, x1, y0, y1)


def evaluate_split(loaded, Q, rows, cols, h):
    F, S = torch.full_like(Q, float("nan")), torch.full_like(Q, float("nan"))
    K = loaded.ensemble_size
    M = torch.full((K,) + Q.shape, float("nan"), dtype=Q.dtype)
    energy = torch.zeros(Q.shape[:-2], dtype=Q.dtype)
    for x0, x1 in zip(rows, rows[1:]):
        for y0, y1 in zip(cols, cols[1:]):
            out = loaded.compute_lattice_block(block_of(Q, x0, x1, y0, y1, h), h, True)
            assert out["forces"].shape == Q.shape[:-2] + (x1 - x0, y1 - y0)
            F[..., x0:x1, y0:y1], S[..., x0:x1, y0:y1] = out["forces"], out["forces_std"]
            M[..., x0:x1, y0:y1] = out["member_forces"]
            energy = energy + out.get("energy", torch.zeros(()))
    return F, S, M, energy


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("extra_halo", [0, 2])
@pytest.mark.parametrize("variant", VARIANTS)
def test_any_split_equals_full_periodic_grid(models, variant, split, extra_halo):
    m, loaded = models[variant]
    Q = field(seed=3)
    ref = loaded.module.compute_lattice(Q, True)
    F, S, M, energy = evaluate_split(loaded, Q, *SPLITS[split], VARIANTS[variant] + extra_halo)
    assert torch.allclose(F, ref["forces"], rtol=0, atol=1e-12), (F - ref["forces"]).abs().max()
    assert torch.allclose(S, ref["forces_std"], rtol=0, atol=1e-12), (S - ref["forces_std"]).abs().max()
    f_el, _ = m.member_forces(Q, False)  # each member's own full-grid forces
    member_ref = f_el.detach() + m.elastic(Q)[1]
    assert torch.allclose(M, member_ref, rtol=0, atol=1e-12), (M - member_ref).abs().max()
    assert torch.allclose(M.mean(0), F, rtol=0, atol=1e-12)
    if variant == "energy":  # the blocks' energy shares add up to the total
        assert torch.allclose(energy, ref["energy"], rtol=1e-13, atol=1e-10), (energy, ref["energy"])
    else:
        assert "energy" not in ref


@pytest.mark.parametrize("variant", VARIANTS)
def test_single_field_without_batch_dims(models, variant):
    _, loaded = models[variant]
    Q = field(seed=4, batch=())
    h = VARIANTS[variant]
    out = loaded.compute_lattice_block(block_of(Q, 5, 9, 2, 17, h), h, False)
    assert set(out) == ({"forces", "energy"} if variant == "energy" else {"forces"})
    assert out["forces"].shape == (4, 15)
    assert torch.allclose(out["forces"], loaded.module.compute_lattice(Q, False)["forces"][5:9, 2:17], rtol=0, atol=1e-12)


@pytest.mark.parametrize("variant", VARIANTS)
def test_interaction_range_is_the_tight_minimal_halo(models, variant):
    m, loaded = models[variant]
    h = VARIANTS[variant]
    assert loaded.interaction_range == h == m.halo
    # on the full grid, a change of one site moves forces exactly up to h sites away along an axis
    Q = field(L=24, seed=5, batch=())
    Q2 = Q.clone()
    Q2[12, 12] += 0.5
    dF = (loaded.module.compute_lattice(Q2, False)["forces"] - loaded.module.compute_lattice(Q, False)["forces"]).abs()
    idx = torch.arange(24) - 12
    cheb = torch.maximum(idx.abs()[:, None], idx.abs()[None, :])
    assert dF[cheb > h].max() == 0.0
    assert dF[cheb == h].max() > 1e-10  # so a halo of h - 1 cannot reproduce the full grid
    # the same through the block method: the outermost ring of a minimal halo moves the interior forces
    block = block_of(Q, 8, 14, 8, 14, h)
    ring = block.clone()
    ring[0, :] += 0.5
    ring[:, -1] -= 0.5
    a, b = loaded.compute_lattice_block(block, h, False), loaded.compute_lattice_block(ring, h, False)
    assert (a["forces"] - b["forces"]).abs().max() > 1e-10


@pytest.mark.parametrize("variant", VARIANTS)
def test_too_small_halo_or_no_interior_is_a_clear_error(models, variant):
    _, loaded = models[variant]
    h = VARIANTS[variant]
    Q = field(seed=6, batch=())
    with pytest.raises(ValueError, match=rf"halo {h - 1} is smaller than the model's interaction range.*"
                                         rf"at least {h} sites"):
        loaded.compute_lattice_block(block_of(Q, 0, 5, 0, 5, h - 1), h - 1, False)
    with pytest.raises(ValueError, match=rf"has no interior sites for halo {h}"):
        loaded.compute_lattice_block(torch.zeros(2 * h, 2 * h + 3, dtype=torch.float64), h, False)
    with pytest.raises(ValueError, match="Q_block must have shape"):
        loaded.compute_lattice_block(torch.zeros(30, dtype=torch.float64), h, False)


class LegacyLattice(torch.nn.Module):
    """A lattice model as files were exported before the block method existed: compute_lattice only."""

    def __init__(self):
        super().__init__()
        self.kind = "lattice"
        self.species = ["Q"]
        self.cutoff = 1.0
        self.k0 = torch.nn.Parameter(torch.ones((), dtype=torch.float64))

    @torch.jit.export
    def compute_lattice(self, Q: torch.Tensor, need_uncertainty: bool):
        return {"forces": -self.k0 * Q}


def test_old_file_without_block_method_loads_and_names_the_reexport(tmp_path):
    path = mlpot_plugins.export(LegacyLattice(), tmp_path / "old.pt", kind="lattice")
    loaded = mlpot_plugins.load(path)
    assert not hasattr(loaded.module, LATTICE_BLOCK_METHOD) and loaded.interaction_range == 1.0
    Q = field(L=6, batch=())
    assert torch.equal(loaded.module.compute_lattice(Q, False)["forces"], -Q)  # still runs
    with pytest.raises(ModelFormatError, match=r"no compute_lattice_block\(\) method.*Re-export it.*"
                                               r"python -m mlpot_plugins.pretrained.reexport_holstein .*old.pt"):
        loaded.compute_lattice_block(Q, 1, False)


def test_metadata_range_must_match_the_module_halo(models):
    _, loaded = models["energy"]
    meta = dict(loaded.metadata, interaction_range=3.0)
    with pytest.raises(ModelFormatError, match=r"metadata interaction_range=3.0 contradicts the module's halo=6"):
        check_module_against_metadata(loaded.module, meta, "m.pt")


def test_atomistic_model_has_no_block_method():
    loaded = mlpot_plugins.load("morse-cuau")
    with pytest.raises(ValueError, match="for lattice models, this one is atomistic"):
        loaded.compute_lattice_block(torch.zeros(8, 8), 1, False)


@pytest.mark.parametrize("name,halo", [("holstein-d4", 3), ("holstein-d4-energy", 6)])
def test_shipped_files_expose_the_block_method(name, halo):
    loaded = mlpot_plugins.load(name)
    assert hasattr(loaded.module, LATTICE_BLOCK_METHOD) and loaded.interaction_range == halo
    Q = field(L=24, seed=8).float()
    ref = loaded.module.compute_lattice(Q, True)
    F, S, M, energy = evaluate_split(loaded, Q, [0, 11, 24], [0, 13, 24], halo)
    for got, want in ((F, ref["forces"]), (S, ref["forces_std"]), (M.mean(0), ref["forces"])):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5), (got - want).abs().max()
    if "energy" in ref:
        assert torch.allclose(energy, ref["energy"], rtol=1e-5)


def test_fractional_halo_is_refused(models):
    _, loaded = models["direct"]
    with pytest.raises(ValueError, match=r"halo 3.5 must be a whole number of sites; the model needs at least 3"):
        loaded.compute_lattice_block(torch.zeros(12, 12, dtype=torch.float64), 3.5, False)


def test_reexport_of_a_trained_file_keeps_its_results(tmp_path):
    """`python -m mlpot_plugins.pretrained.reexport_holstein MODEL.pt` on a file written by training: rewritten
    in place, compute_lattice bit-identical and metadata unchanged (the script asserts both), block method on."""
    from mlpot_plugins.holstein.train import export_committee
    from mlpot_plugins.pretrained.reexport_holstein import main

    torch.manual_seed(2)
    m = D4LatticeForceField(P, channels=4, hidden=8, ensemble_size=2, energy_based=True)
    m.uncertainty_scale = 1.7
    config = dict(arch="conv", radius2=13, channels=4, hidden=8, ensemble_size=2, energy_based=True, name="mine",
                  data_L=16, holstein=P)
    path = export_committee(m, tmp_path / "mine.pt", config, {"rmse": 0.1})
    before = mlpot_plugins.load(path).metadata
    main([str(path)])
    after = mlpot_plugins.load(path)
    assert after.metadata == before and after.interaction_range == 6 and not list(tmp_path.glob(".*"))
    with pytest.raises(ValueError, match="not a Holstein lattice model written by `mlpot holstein train`"):
        main(["morse-cuau"])
