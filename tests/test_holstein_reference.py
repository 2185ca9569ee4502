"""Exact reference physics of the Holstein model: ED, KPM and the Langevin integrator."""
import math

import pytest
import torch

from mlpot_plugins.holstein.ed import ed_solve, hamiltonian
from mlpot_plugins.holstein.kpm import kpm_density, kpm_site_density
from mlpot_plugins.holstein.langevin import LangevinIntegrator
from mlpot_plugins.holstein.params import HolsteinParams, elastic_force, stagger


@pytest.fixture(scope="module", autouse=True)
def float64_default():
    """These checks run in float64; the process's default dtype is restored for the other test modules."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(saved)


def field(L=6, amp=1.0, seed=0, batch=()):
    return torch.randn(tuple(batch) + (L, L), generator=torch.Generator().manual_seed(seed)) * amp


@pytest.mark.parametrize("kT", [0.1, 0.5])
def test_hellmann_feynman_forces_are_minus_free_energy_gradient(kT):
    p = HolsteinParams(kT=kT)
    Q = field(6, 1.5)
    F = ed_solve(Q, p)["forces"]
    h = 1e-5
    for (x, y) in [(0, 0), (2, 3), (5, 1)]:
        dQ = torch.zeros_like(Q)
        dQ[x, y] = h
        fd = -(ed_solve(Q + dQ, p)["free_energy"] - ed_solve(Q - dQ, p)["free_energy"]) / (2 * h)
        assert abs(fd - F[x, y]) < 1e-6, (x, y, fd, F[x, y])


def test_ed_d4_and_translation_symmetry():
    p = HolsteinParams()
    Q = field(6, 2.0, batch=(1,))
    F = ed_solve(Q, p)["forces"]
    for k in (1, 2, 3):
        assert torch.allclose(ed_solve(torch.rot90(Q, k, (-2, -1)), p)["forces"], torch.rot90(F, k, (-2, -1)),
                              atol=1e-10)
    assert torch.allclose(ed_solve(Q.flip(-1), p)["forces"], F.flip(-1), atol=1e-10)
    assert torch.allclose(ed_solve(Q.transpose(-1, -2), p)["forces"], F.transpose(-1, -2), atol=1e-10)
    shifted = torch.roll(Q, (2, 3), (-2, -1))
    assert torch.allclose(ed_solve(shifted, p)["forces"], torch.roll(F, (2, 3), (-2, -1)), atol=1e-10)


def test_particle_hole_symmetry_and_half_filling():
    p = HolsteinParams()
    Q = field(6, 2.0, seed=3)
    n, nm = ed_solve(Q, p)["density"], ed_solve(-Q, p)["density"]
    assert torch.allclose(nm, 1 - n, atol=1e-12)
    # spectrum of h(-Q) is minus that of h(Q) (S h(Q) S = -h(-Q) on the bipartite lattice)
    e = torch.linalg.eigvalsh(hamiltonian(Q, p))
    assert torch.allclose(torch.linalg.eigvalsh(hamiltonian(-Q, p)), -e.flip(-1), atol=1e-12)
    # a perfect checkerboard is exactly half filled at mu = 0
    cb = 3.0 * stagger(6)
    assert abs(ed_solve(cb, p)["density"].mean().item() - 0.5) < 1e-12
    assert abs(ed_solve(field(6, 0.0) + 0.1, p)["density"].mean().item() - 0.5) > 1e-3  # not a tautology


def test_strong_coupling_relaxation_reaches_checkerboard_amplitude():
    p = HolsteinParams(kT=1e-3)
    L = 6
    Q = 0.5 * stagger(L) + 0.2 * field(L, 1.0, seed=1)
    for _ in range(300):  # overdamped relaxation dQ = F dt / (k0 + 4 kappa) converges geometrically
        Q = Q + 0.8 * ed_solve(Q, p)["forces"]
    F = ed_solve(Q, p)["forces"]
    A_expected = p.cdw_amplitude(L)
    assert F.abs().max() < 1e-8
    assert torch.allclose(Q * stagger(L), torch.full_like(Q, A_expected), atol=1e-6), (Q * stagger(L))
    assert 6.0 < A_expected < 6.25  # strong coupling: A -> g / (2 (k0 - 4 kappa)) = 6.25


def test_kpm_agrees_with_ed_densities():
    p = HolsteinParams(kT=0.5)
    Q = field(8, 0.7, seed=2, batch=(2,))
    n_ed = ed_solve(Q, p)["density"]
    exact_probe = kpm_density(Q, p, colors=8)  # c = L: probing exact, only the Chebyshev truncation left
    assert (exact_probe - n_ed).abs().max() < 5e-3
    n_kpm = kpm_density(Q, p, colors=4, generator=torch.Generator().manual_seed(0))
    assert (n_kpm - n_ed).abs().max() < 2e-2
    assert (n_kpm - n_ed).abs().mean() < 5e-3
    assert (kpm_density(Q, p, n_moments=8, colors=8) - n_ed).abs().max() > 1e-2  # too few moments fail
    sites = torch.tensor([[0, 0], [3, 5], [7, 7]])
    n_site = kpm_site_density(Q[0], sites, p, radius=4)
    assert (n_site - n_ed[0][sites[:, 0], sites[:, 1]]).abs().max() < 1e-2


def harmonic(p):
    return lambda Q: elastic_force(Q, p)


def test_langevin_equipartition():
    p = HolsteinParams(g=0.0, gamma=5.0, dt=0.1, kT=0.3)
    Q0 = field(8, 0.0, batch=(4,))
    integ = LangevinIntegrator(harmonic(p), p, Q0, seed=1)
    integ.step(200)
    acc = []
    integ.step(1500, callback=lambda s: acc.append((s.P ** 2).mean().item() / p.m))
    acc = torch.tensor(acc)
    blocks = acc.reshape(15, -1).mean(1)  # block averages for an honest error bar
    err = blocks.std() / math.sqrt(len(blocks))
    assert abs(acc.mean() - p.kT) < max(4 * err, 0.01 * p.kT), (acc.mean(), err)


def test_checkpoint_restart_is_bit_identical(tmp_path):
    p = HolsteinParams(kT=0.1)
    Q0 = field(4, 1.0, seed=5)
    a = LangevinIntegrator(ed_solve_forces := (lambda Q: ed_solve(Q, p)["forces"]), p, Q0, seed=9)
    a.step(6)
    b = LangevinIntegrator(ed_solve_forces, p, Q0, seed=9)
    b.step(3)
    b.save(tmp_path / "ck.pt")
    c = LangevinIntegrator.restore(tmp_path / "ck.pt", ed_solve_forces)
    c.step(3)
    assert c.step_count == 6 and torch.equal(a.Q, c.Q) and torch.equal(a.P, c.P)
    d = LangevinIntegrator(ed_solve_forces, p, Q0, seed=10)
    d.step(6)
    assert not torch.equal(a.Q, d.Q)


def test_bad_inputs_have_clear_errors(tmp_path):
    p = HolsteinParams()
    with pytest.raises(ValueError, match="even L"):
        ed_solve(field(5), p)
    with pytest.raises(ValueError, match="square"):
        ed_solve(torch.zeros(4, 6), p)
    with pytest.raises(ValueError, match="finite"):
        ed_solve(torch.full((4, 4), float("nan")), p)
    with pytest.raises(ValueError, match="elastically unstable"):
        HolsteinParams(kappa=0.3)
    with pytest.raises(ValueError, match="unknown Holstein parameter"):
        HolsteinParams.from_dict({"temperature": 1.0})
    (tmp_path / "junk.pt").write_text("nope")
    with pytest.raises(ValueError, match="not a Holstein Langevin checkpoint"):
        LangevinIntegrator.restore(tmp_path / "junk.pt", harmonic(p))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LangevinIntegrator.restore(tmp_path / "none.pt", harmonic(p))
