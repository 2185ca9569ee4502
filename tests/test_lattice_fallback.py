"""The exact local solver exported with a lattice committee (``compute_lattice_block_fallback``, contract Lattice
fallback): on any block split it equals the Python ``GatedForces`` (no cap); threshold -> 0 gives the exact KPM
(and ED-close) force everywhere; a huge threshold gives ``compute_lattice_block``; the export command keeps the
weights; the metadata and the module agree."""
import pytest
import torch

import mlpot_plugins
from mlpot_plugins.contract import LATTICE_FALLBACK_METHOD, ModelFormatError, validate_metadata
from mlpot_plugins.holstein.ed import ed_solve
from mlpot_plugins.holstein.fallback import GatedForces, with_fallback
from mlpot_plugins.holstein.kpm import kpm_site_density
from mlpot_plugins.holstein.model import D4LatticeForceField
from mlpot_plugins.holstein.params import HolsteinParams, elastic_force, periodic_block
from mlpot_plugins.model_file import check_module_against_metadata

from cli_util import run_cli

P = HolsteinParams(kT=0.5)  # a warm electron bath: 96 moments resolve the Fermi function (fast tests)
RADIUS, MOMENTS = 3, 96
L = 12
SPLITS = {"whole": ([0, 12], [0, 12]), "2x2": ([0, 6, 12], [0, 6, 12]), "uneven": ([0, 1, 12], [0, 5, 7, 12])}


def field(L=L, seed=0, batch=()):
    return torch.randn(tuple(batch) + (L, L), generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """variant -> loaded exported committee with the solver (float64)"""
    out = {}
    for variant in ("direct", "energy"):
        torch.manual_seed(1)
        m = D4LatticeForceField(P.to_dict(), radius2=2 if variant == "energy" else 5, channels=3, hidden=6,
                                ensemble_size=3, energy_based=variant == "energy", dtype=torch.float64)
        m = with_fallback(m, P, RADIUS, MOMENTS)
        path = mlpot_plugins.export(m, tmp_path_factory.mktemp(variant) / "m.pt", kind="lattice",
                                    extra={"holstein": P.to_dict()})
        out[variant] = mlpot_plugins.load(path)
    return out


def split_fallback(loaded, Q, rows, cols, halo, threshold):
    F, S, mask = (torch.full_like(Q, float("nan")) for _ in range(3))
    for x0, x1 in zip(rows, rows[1:]):
        for y0, y1 in zip(cols, cols[1:]):
            out = loaded.compute_lattice_block_fallback(periodic_block(Q, halo, x0, x1, y0, y1), halo, threshold)
            F[..., x0:x1, y0:y1], S[..., x0:x1, y0:y1] = out["forces"], out["forces_std"]
            mask[..., x0:x1, y0:y1] = out["fallback_mask"]
    return F, S, mask


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("variant", ["direct", "energy"])
def test_any_split_equals_python_gated_forces(models, variant, split):
    loaded = models[variant]
    Q = field(seed=2)
    std = loaded.module.compute_lattice(Q, True)["forces_std"]
    s = std.flatten().sort().values
    threshold = 0.5 * (s[len(s) // 2] + s[len(s) // 2 + 1]).item()  # half the sites fall back, none near it
    gate = GatedForces(loaded.module, P, threshold, radius=RADIUS, n_moments=MOMENTS, max_fraction=None)
    ref = gate(Q)
    halo = loaded.metadata["fallback_range"]
    F, S, mask = split_fallback(loaded, Q, *SPLITS[split], halo + (1 if split == "uneven" else 0), threshold)
    assert torch.equal(mask.bool(), gate.last_mask) and 0 < mask.sum() < Q.numel()
    assert torch.allclose(F, ref, rtol=0, atol=1e-10), (F - ref).abs().max()
    assert torch.allclose(S, std, rtol=0, atol=1e-12)
    ml = loaded.module.compute_lattice(Q, False)["forces"]
    keep = ~mask.bool()
    assert (F - ml)[~keep].abs().min() > 1e-3 and torch.allclose(F[keep], ml[keep], rtol=0, atol=1e-12)


def test_tiny_threshold_gives_the_exact_force_everywhere(models):
    loaded = models["direct"]
    Q = field(L=8, seed=3)
    out = loaded.compute_lattice_block_fallback(periodic_block(Q, 3), 3, 1e-300)
    assert torch.equal(out["fallback_mask"], torch.ones(8, 8, dtype=torch.float64))
    sites = torch.stack(torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij"), -1).reshape(-1, 2)
    n = kpm_site_density(Q, sites, P, MOMENTS, RADIUS).reshape(8, 8)
    exact = P.g * (n - 0.5) + elastic_force(Q, P)
    assert torch.allclose(out["forces"], exact, rtol=0, atol=1e-10), (out["forces"] - exact).abs().max()
    ed = ed_solve(Q, P)["forces"]
    ml = loaded.module.compute_lattice(Q, False)["forces"]
    assert (out["forces"] - ed).abs().max() < 0.15 < 0.5 < (ml - ed).abs().max()  # the solver is the physics


@pytest.mark.parametrize("threshold", [1e6, float("inf")])
def test_huge_threshold_is_the_block_method(models, threshold):
    loaded = models["energy"]
    Q = field(seed=4, batch=(2,))
    h = loaded.metadata["fallback_range"]
    block = periodic_block(Q, h, 2, 9, 0, 12)
    out = loaded.compute_lattice_block_fallback(block, h, threshold)
    ref = loaded.compute_lattice_block(block, h, True)
    for key in ("forces", "forces_std"):
        assert torch.allclose(out[key], ref[key], rtol=0, atol=1e-12)
    assert out["fallback_mask"].shape == (2, 7, 12) and out["fallback_mask"].sum() == 0
    assert out["fallback_mask"].dtype == torch.float64


def test_metadata_range_and_module_agree(models):
    loaded = models["energy"]  # radius2 = 2: R = 1, energy halo 2 < window radius 3
    assert loaded.metadata["fallback"] == {"radius": RADIUS, "n_moments": MOMENTS}
    assert loaded.metadata["fallback_range"] == 3 == loaded.module.fallback_range and loaded.interaction_range == 2
    assert models["direct"].metadata["fallback_range"] == 3  # radius2 = 5: R = 2, direct halo 2
    meta = dict(loaded.metadata, fallback={"radius": 2, "n_moments": MOMENTS})
    with pytest.raises(ModelFormatError, match=r"metadata fallback.radius=2 contradicts the module's fallback_radius=3"):
        check_module_against_metadata(loaded.module, meta, "m.pt")
    meta = {k: v for k, v in loaded.metadata.items() if k not in ("fallback", "fallback_range")}
    with pytest.raises(ModelFormatError, match=r"exports compute_lattice_block_fallback\(\) but the metadata lacks"):
        check_module_against_metadata(loaded.module, meta, "m.pt")
    with pytest.raises(ModelFormatError, match=r"fallback_range 1 / fallback .* must be a lattice model's int halo"):
        validate_metadata(dict(loaded.metadata, fallback_range=1))


def test_export_command_adds_the_solver_and_keeps_the_weights(tmp_path, capsys):
    from mlpot_plugins.holstein.train import export_committee

    torch.manual_seed(2)
    m = D4LatticeForceField(P.to_dict(), radius2=5, channels=3, hidden=6, ensemble_size=2)
    config = dict(arch="conv", radius2=5, channels=3, hidden=6, ensemble_size=2, energy_based=False, name="mine",
                  data_L=12, holstein=P.to_dict())
    path = export_committee(m, tmp_path / "mine.pt", config, {"rmse": 0.1})
    code, err = run_cli(["holstein", "export", path, "--fallback-radius", "4", "--fallback-moments", "64",
                         "--out", tmp_path / "fb.pt"], capsys)
    assert code == 0, err
    old, new = mlpot_plugins.load(path), mlpot_plugins.load(tmp_path / "fb.pt")
    assert not hasattr(old.module, LATTICE_FALLBACK_METHOD) and hasattr(new.module, LATTICE_FALLBACK_METHOD)
    assert {k: v for k, v in new.metadata.items() if not k.startswith("fallback")} == old.metadata
    assert new.metadata["fallback"] == {"radius": 4, "n_moments": 64} and new.metadata["fallback_range"] == 4
    sd_old, sd_new = old.module.state_dict(), new.module.state_dict()
    assert sd_old.keys() == sd_new.keys() and all(torch.equal(sd_old[k], sd_new[k]) for k in sd_old)
    # a later re-export keeps the solver unless asked to drop it
    assert run_cli(["holstein", "export", tmp_path / "fb.pt", "--out", tmp_path / "again.pt"], capsys)[0] == 0
    assert mlpot_plugins.load(tmp_path / "again.pt").metadata["fallback"] == {"radius": 4, "n_moments": 64}
    assert run_cli(["holstein", "export", tmp_path / "fb.pt", "--no-fallback", "--out", tmp_path / "no.pt"],
                   capsys)[0] == 0
    assert mlpot_plugins.load(tmp_path / "no.pt").metadata == old.metadata


@pytest.mark.parametrize("name", ["holstein-d4", "holstein-d4-energy"])
def test_shipped_files_carry_the_solver(name):
    loaded = mlpot_plugins.load(name)
    assert loaded.metadata["fallback"] == {"radius": 6, "n_moments": 2048}
    assert loaded.metadata["fallback_range"] == 6 == loaded.module.fallback_range
