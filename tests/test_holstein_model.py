"""The D4 ML force fields (group convolution, direct and energy-based; irreps features): exact symmetries,
conservative variant, committee, export -> load."""
import pytest
import torch

import mlpot_plugins
from mlpot_plugins.holstein.irreps import D4IrrepsForceField, irreps_basis
from mlpot_plugins.holstein.model import D4LatticeForceField, patch_offsets
from mlpot_plugins.holstein.params import HolsteinParams

P = HolsteinParams().to_dict()


def model(arch="conv", **kw):
    kw.setdefault("dtype", torch.float64)
    kw.setdefault("hidden", 8)
    kw.setdefault("ensemble_size", 3)
    if arch == "irreps":
        kw.pop("energy_based", None)
        m = D4IrrepsForceField(P, **kw)
        m.fit_scales(field(L=9, seed=7))  # non-trivial feature standardisation
        return m
    kw.setdefault("channels", 4)
    return D4LatticeForceField(P, **kw)


VARIANTS = [("conv", False), ("conv", True), ("irreps", False)]  # (architecture, energy_based)


def field(L=8, seed=0, batch=(2,)):
    return torch.randn(tuple(batch) + (L, L), generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3


def test_patch_has_45_sites_for_radius_sqrt13():
    assert len(patch_offsets(13)) == 45 and len(patch_offsets(2)) == 9


D4 = [lambda x: x, lambda x: torch.rot90(x, 1, (-2, -1)), lambda x: torch.rot90(x, 2, (-2, -1)),
      lambda x: torch.rot90(x, 3, (-2, -1)), lambda x: x.flip(-1), lambda x: x.flip(-2),
      lambda x: x.transpose(-1, -2), lambda x: torch.rot90(x, 1, (-2, -1)).transpose(-1, -2)]


@pytest.mark.parametrize("arch,energy_based", VARIANTS)
def test_exact_d4_translation_and_odd_symmetry(arch, energy_based):
    m = model(arch, energy_based=energy_based)
    Q = field()
    out = m.compute_lattice(Q, True)
    F, S = out["forces"], out["forces_std"]
    for g in D4[1:]:
        o = m.compute_lattice(g(Q), True)
        assert torch.allclose(o["forces"], g(F), atol=1e-12) and torch.allclose(o["forces_std"], g(S), atol=1e-12)
    o = m.compute_lattice(torch.roll(Q, (3, 5), (-2, -1)), True)
    assert torch.allclose(o["forces"], torch.roll(F, (3, 5), (-2, -1)), atol=1e-12)
    o = m.compute_lattice(-Q, True)
    assert torch.allclose(o["forces"], -F, atol=1e-12) and torch.allclose(o["forces_std"], S, atol=1e-12)
    if energy_based:
        assert torch.allclose(o["energy"], out["energy"], atol=1e-10)
    # not vacuous: a generic (non-symmetric) field gives non-symmetric forces
    assert not torch.allclose(F, D4[1](F), atol=1e-3)


@pytest.mark.parametrize("arch", ["conv", "irreps"])
def test_forces_are_local_to_the_patch(arch):
    m = model(arch)
    Q = field(L=10, batch=())
    F = m.compute_lattice(Q, False)["forces"]
    Q2 = Q.clone()
    Q2[5, 5] += 1.0
    dF = (m.compute_lattice(Q2, False)["forces"] - F).abs()
    for x in range(10):
        for y in range(10):
            dx, dy = min(abs(x - 5), 10 - abs(x - 5)), min(abs(y - 5), 10 - abs(y - 5))
            if dx * dx + dy * dy > 13:
                assert dF[x, y] == 0, (x, y)
    assert dF[5, 7] > 0 and dF[7, 7] > 0


def test_energy_variant_forces_are_minus_energy_gradient():
    m = model(energy_based=True, ensemble_size=1)
    Q = field(batch=())
    out = m.compute_lattice(Q, False)
    h = 1e-6
    for (x, y) in [(0, 0), (3, 6)]:
        dQ = torch.zeros_like(Q)
        dQ[x, y] = h
        fd = -(m.compute_lattice(Q + dQ, False)["energy"] - m.compute_lattice(Q - dQ, False)["energy"]) / (2 * h)
        assert abs(fd - out["forces"][x, y]) < 1e-7


@pytest.mark.parametrize("arch", ["conv", "irreps"])
def test_identical_members_have_zero_std(arch):
    m = model(arch, ensemble_size=3)
    with torch.no_grad():
        for prm in m.parameters():  # every per-member parameter has the committee as its first axis
            if prm.dim() and prm.shape[0] == 3:
                prm[1:] = prm[0]
    out = m.compute_lattice(field(), True)
    assert out["forces_std"].abs().max() == 0
    assert model(arch, ensemble_size=3).compute_lattice(field(), True)["forces_std"].min() > 0


@pytest.mark.parametrize("arch,energy_based", VARIANTS)
def test_export_load_identity(tmp_path, arch, energy_based):
    m = model(arch, energy_based=energy_based)
    path = mlpot_plugins.export(m, tmp_path / "h.pt", kind="lattice", extra={"holstein": P})
    loaded = mlpot_plugins.load(path)
    meta = loaded.metadata
    assert meta["kind"] == "lattice" and meta["species"] == ["Q"] and meta["ensemble_size"] == 3
    assert meta["cutoff"] == pytest.approx(13 ** 0.5) and meta["extra"]["holstein"]["g"] == 3.5
    assert ("energy" in meta["outputs"]) == energy_based and "forces_std" in meta["outputs"]
    Q = field()
    a, b = m.compute_lattice(Q, True), loaded.module.compute_lattice(Q, True)
    assert set(a) == set(b)
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-12), (k, (a[k] - b[k]).abs().max())  # JIT may fuse ops


def test_bad_inputs_have_clear_errors():
    m = torch.jit.script(model())
    with pytest.raises(Exception, match="too small for the model's patch"):
        m.compute_lattice(torch.zeros(4, 4, dtype=torch.float64), False)
    with pytest.raises(Exception, match="square lattice"):
        m.compute_lattice(torch.zeros(8, 9, dtype=torch.float64), False)
    with pytest.raises(ValueError, match="radius2"):
        model(radius2=0)


@pytest.mark.parametrize("arch,energy_based", VARIANTS)
def test_row_blocking_does_not_change_results(arch, energy_based):
    m = model(arch, energy_based=energy_based)
    Q = field(L=10)
    ref = m.compute_lattice(Q, True)
    m.block_sites = 25  # 1 row of 10 sites per block for a batch of 2
    out = m.compute_lattice(Q, True)
    for k in ref:
        assert torch.allclose(out[k], ref[k], atol=1e-12), k


def test_irreps_basis_is_orthogonal_and_complete():
    """The 45 patch sites split into 9 A1 + 3 A2 + 6 B1 + 5 B2 + 11 E copies; U is orthogonal, and each
    1-d block transforms by its character under a 90-degree rotation of the patch."""
    offsets = patch_offsets(13)
    b = irreps_basis(offsets)
    assert [b[k].shape[0] for k in ("A1", "A2", "B1", "B2", "Ev")] == [9, 3, 6, 5, 11]
    U = torch.cat([b[k] for k in ("A1", "A2", "B1", "B2", "Ev", "Ew")])
    assert torch.allclose(U @ U.T, torch.eye(45, dtype=U.dtype), atol=1e-12)
    v = torch.randn(45, dtype=torch.float64)
    index = {o: k for k, o in enumerate(offsets)}
    rv = torch.empty_like(v)  # v rotated by 90 degrees: (x, y) -> (-y, x)
    for k, (x, y) in enumerate(offsets):
        rv[index[(-y, x)]] = v[k]
    for name, chi in (("A1", 1), ("A2", 1), ("B1", -1), ("B2", -1)):
        assert torch.allclose(b[name] @ rv, chi * (b[name] @ v), atol=1e-12), name
    assert not torch.allclose(b["Ev"] @ rv, b["Ev"] @ v, atol=1e-3)  # E mixes (v, w): not a character
