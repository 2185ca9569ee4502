"""pair_style mlpot with lattice models (issue 13): real `lmp` / `mpiexec -n 2|4 lmp` on small lattices.

Forces (F_z) and the calibrated per-site std of 1, 2 and 4 ranks equal `compute_lattice` on the whole periodic
grid (float64 twins of the shipped committees: 1e-12; the shipped float32 files by name: float32 round-off),
including a lattice smaller than twice the halo (ghost images wrap several times); the energy model's pe is
its total energy; `fallback THRESHOLD` gives the Python GatedForces' forces and its count of fallen-back
sites through `compute ID all pair mlpot` (c_ID[1]); write_restart/read_restart continue (to 1e-12); Langevin (fix langevin + fix setforce
0 0 NULL + fix nve) runs and keeps the sites on the lattice; model_devi writes the per-site std."""
from pathlib import Path

import numpy as np
import pytest
import torch

import mlpot_plugins
from lammps_util import lattice_sites, plugin, read_dump, run_lmp, write_lattice_data  # noqa: F401
from mlpot_plugins.holstein.fallback import GatedForces, with_fallback
from mlpot_plugins.holstein.params import HolsteinParams
from mlpot_plugins.pretrained.reexport_holstein import eager_model

MODELS = ("holstein-d4", "holstein-d4-energy")  # halo 3 and 6


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """float64 copies of the shipped lattice committees (same weights), for 1e-12 parity checks."""
    d = tmp_path_factory.mktemp("lattice_models")
    out = {}
    for name in MODELS:
        old = mlpot_plugins.load(name)
        out[name] = mlpot_plugins.export(eager_model(old).double(), d / f"{name}-f64.pt", kind="lattice",
                                         name=old.metadata["name"], extra=old.metadata["extra"])
    return out


def hot_field(L, seed=0, scale=0.8):
    return np.random.default_rng(seed).normal(size=(L, L)) * scale


def deck(plugin, model, options="", body="run 0", data="lat.data", restart=None):
    start = f"read_restart {restart}" if restart else f"read_data {data}\npair_style mlpot {model} {options}\npair_coeff * * Q"
    return f"""units lj
processors * * 1
atom_style atomic
atom_modify map array
boundary p p f
plugin load {plugin}
{start}
compute u all mlpot/atom
thermo_style custom step pe c_u[1]
thermo_modify norm no format float %.17g
{body}
"""


DUMP = "dump d all custom {every} {name} id x y z vx vy vz fx fy fz c_u[1]\ndump_modify d sort id format float %.17g"


def lammps_forces(tmp_path, plugin, model, Q, nprocs, options="", xyz=None, check=True):
    """(F_z, per-site std, pe) of a `run 0` on the field Q (sites at xyz, default exactly on the lattice), in
    site order."""
    xyz = lattice_sites(Q) if xyz is None else xyz
    write_lattice_data(tmp_path / "lat.data", xyz, (Q.shape[0], Q.shape[1], 20.0))
    body = DUMP.format(every=1, name="out.dump") + "\nrun 0"
    res = run_lmp(deck(plugin, model, options, body), tmp_path, nprocs=nprocs, check=check)
    if not check:
        return res
    d = read_dump(tmp_path / "out.dump")
    assert np.array_equal(d["fx"], np.zeros_like(d["fx"])) and np.array_equal(d["fy"], np.zeros_like(d["fy"]))
    assert np.array_equal(d["z"], Q.ravel())
    lines = res.stdout.splitlines()
    row = lines[[k for k, l in enumerate(lines) if l.split()[:2] == ["Step", "PotEng"]][0] + 1].split()
    return d["fz"], d["c_u[1]"], float(row[1])


def reference(model, Q):
    m = mlpot_plugins.load(model)
    Qt = torch.tensor(Q, dtype=m.module.compute_lattice(torch.zeros(8, 8, dtype=torch.float64), False)["forces"].dtype)
    out = m.module.compute_lattice(Qt, True)
    return {k: v.detach().double().numpy().ravel() if v.dim() else float(v.detach()) for k, v in out.items()}


@pytest.mark.parametrize("nprocs", [1, 2, 4])
@pytest.mark.parametrize("name", MODELS)
def test_ranks_equal_full_grid_fp64(tmp_path, plugin, twins, name, nprocs):
    # 12 < 2 * halo + 1 for the energy model: on 1 rank its images wrap several times, on 4 ranks (6 x 6 sites
    # each) its halo reaches past the neighbouring ranks; 20 x 20 on 2 ranks: blocks of 10 x 20
    L = 20 if nprocs == 2 else 12
    Q = hot_field(L, seed=nprocs)
    fz, std, pe = lammps_forces(tmp_path, plugin, twins[name], Q, nprocs)
    ref = reference(twins[name], Q)
    assert np.abs(fz - ref["forces"]).max() < 1e-12, np.abs(fz - ref["forces"]).max()
    assert np.abs(std - ref["forces_std"]).max() < 1e-12, np.abs(std - ref["forces_std"]).max()
    assert std.min() > 0
    if "energy" in ref:  # pe = the energy model's total energy (sum of the ranks' block shares)
        assert abs(pe - ref["energy"]) < 1e-10 * max(1.0, abs(ref["energy"]))
    else:  # a direct-force model has no energy
        assert pe == 0.0


def test_sites_a_hair_across_the_rank_edge(tmp_path, plugin, twins):
    """Every other site of column 10 sits 5e-5 a left of x = 10 (within the on-lattice tolerance), so the rank
    split at x = 10 gives those to the left rank: forces still equal the full grid; the energy model cannot split
    its energy between the ranks then and says so."""
    L = 20
    Q = hot_field(L, seed=3)
    xyz = lattice_sites(Q)
    xyz[10 * L:11 * L:2, 0] -= 5e-5
    fz, std, _ = lammps_forces(tmp_path, plugin, twins["holstein-d4"], Q, 2, xyz=xyz)
    ref = reference(twins["holstein-d4"], Q)
    assert np.abs(fz - ref["forces"]).max() < 1e-12 and np.abs(std - ref["forces_std"]).max() < 1e-12
    res = lammps_forces(tmp_path, plugin, twins["holstein-d4-energy"], Q, 2, xyz=xyz, check=False)
    errors = [l for l in (res.stdout + res.stderr).splitlines() if l.startswith("ERROR")]
    assert res.returncode > 0 and errors and "energy cannot be split between ranks" in errors[0], errors


@pytest.mark.parametrize("name", MODELS)
def test_shipped_float32_files_by_name_on_two_ranks(tmp_path, plugin, name):
    Q = hot_field(16, seed=5)
    fz, std, _ = lammps_forces(tmp_path, plugin, name, Q, 2)
    ref = reference(name, Q)
    assert np.allclose(fz, ref["forces"], rtol=1e-5, atol=1e-5), np.abs(fz - ref["forces"]).max()
    assert np.allclose(std, ref["forces_std"], rtol=1e-5, atol=1e-5), np.abs(std - ref["forces_std"]).max()


def test_restart_continues_identically(tmp_path, plugin, twins):
    L = 16
    Q, vz = hot_field(L, seed=7, scale=0.5), hot_field(L, seed=8, scale=0.2)
    write_lattice_data(tmp_path / "lat.data", lattice_sites(Q), (L, L, 20.0), vz=vz)
    model = twins["holstein-d4-energy"]
    md = "fix nve all nve\ntimestep 0.05\n"
    run_lmp(deck(plugin, model, body=md + "run 10\nwrite_restart half.rst\nrun 10\n" +
                 DUMP.format(every=1, name="straight.dump") + "\nrun 0"), tmp_path, nprocs=2)
    run_lmp(deck(plugin, model, restart="half.rst", body=md + "run 10\n" + DUMP.format(every=1, name="restarted.dump")
                 + "\nrun 0"), tmp_path, nprocs=2)
    a, b = read_dump(tmp_path / "straight.dump"), read_dump(tmp_path / "restarted.dump")
    assert np.abs(a["z"] - Q.ravel()).max() > 1e-3  # it moved
    for col in ("z", "vz", "fz", "c_u[1]"):  # equal up to round-off (TorchScript's first, profiling call may
        assert np.abs(a[col] - b[col]).max() < 1e-12, (col, np.abs(a[col] - b[col]).max())  # differ by an ulp)


def test_langevin_keeps_sites_on_the_lattice(tmp_path, plugin):
    """fix langevin + fix setforce 0 0 NULL + fix nve (units lj: damp = m/gamma, T = kT) runs the shipped model."""
    L = 16
    Q = hot_field(L, seed=9, scale=0.5)
    write_lattice_data(tmp_path / "lat.data", lattice_sites(Q), (L, L, 20.0), mass=5.0)
    body = ("compute tz all temp/partial 0 0 1\nfix lv all langevin 0.1 0.1 25.0 4321\n"
            "fix xy all setforce 0.0 0.0 NULL\nfix nve all nve\ntimestep 0.05\n"
            "thermo_style custom step temp pe c_u[1] c_u[2]\nthermo_modify temp tz\nthermo 20\nrun 60\n"
            + DUMP.format(every=1, name="end.dump") + "\nrun 0")
    res = run_lmp(deck(plugin, "holstein-d4", body=body), tmp_path, nprocs=2)
    d = read_dump(tmp_path / "end.dump")
    start = lattice_sites(Q)
    assert np.array_equal(d["x"], start[:, 0]) and np.array_equal(d["y"], start[:, 1])
    assert np.array_equal(d["vx"], 0 * d["vx"]) and np.array_equal(d["vy"], 0 * d["vy"])
    assert np.abs(d["z"] - Q.ravel()).max() > 1e-2 and np.isfinite(d["z"]).all()
    thermo = [l.split() for l in res.stdout.splitlines() if l.split()[:1] == ["60"]]
    assert thermo and all(np.isfinite(float(v)) for v in thermo[0]), res.stdout[-2000:]


def test_model_devi_writes_the_per_site_std(tmp_path, plugin, twins):
    L = 14
    Q = hot_field(L, seed=11)
    write_lattice_data(tmp_path / "lat.data", lattice_sites(Q), (L, L, 20.0))
    model = twins["holstein-d4"]
    body = DUMP.format(every=1, name="out.dump") + "\nrun 0"
    run_lmp(deck(plugin, model, options="model_devi devi.out every 1 atomic", body=body), tmp_path, nprocs=2)
    d = read_dump(tmp_path / "out.dump")
    rows = [l.split() for l in (tmp_path / "devi.out").read_text().splitlines() if not l.startswith("#")]
    assert len(rows) == 1 and int(rows[0][0]) == 0
    values = np.array(rows[0][1:], dtype=float)
    scale = mlpot_plugins.load(model).metadata["uncertainty_scale"]
    assert np.array_equal(values[:3], np.zeros(3))  # no virial deviation for a lattice model
    per_site = values[6:]
    assert np.allclose(per_site, d["c_u[1]"] / scale, rtol=1e-6, atol=1e-12)  # uncalibrated, as DeePMD writes it
    assert np.isclose(values[3], per_site.max(), rtol=1e-6) and np.isclose(values[5], per_site.mean(), rtol=1e-6)


FALLBACK_RADIUS, FALLBACK_MOMENTS = 3, 96  # a small KPM window keeps the test fast


@pytest.fixture(scope="module")
def fallback_twin(tmp_path_factory):
    """The float64 twin of holstein-d4 carrying a small exact solver (the shipped files carry radius 6)."""
    old = mlpot_plugins.load("holstein-d4")
    p = HolsteinParams.from_dict(old.metadata["extra"]["holstein"])
    m = with_fallback(eager_model(old).double(), p, FALLBACK_RADIUS, FALLBACK_MOMENTS)
    path = mlpot_plugins.export(m, tmp_path_factory.mktemp("fb") / "fb.pt", kind="lattice",
                                name=old.metadata["name"], extra=old.metadata["extra"])
    return mlpot_plugins.load(path), p


@pytest.mark.parametrize("nprocs", [1, 2])
def test_fallback_equals_python_gated_forces(tmp_path, plugin, fallback_twin, nprocs):
    loaded, p = fallback_twin
    L = 14
    Q = hot_field(L, seed=13, scale=1.5)
    std = loaded.module.compute_lattice(torch.tensor(Q), True)["forces_std"].numpy().ravel()
    s = np.sort(std)
    threshold = float(0.5 * (s[len(s) // 3] + s[len(s) // 3 + 1]))  # two thirds fall back, none near it
    gate = GatedForces(loaded.module, p, threshold, radius=FALLBACK_RADIUS, n_moments=FALLBACK_MOMENTS,
                       max_fraction=None)
    ref = gate(torch.tensor(Q)).numpy().ravel()
    write_lattice_data(tmp_path / "lat.data", lattice_sites(Q), (L, L, 20.0))
    # c_fb[1] is extensive: thermo shows the fraction of sites under units lj's default thermo_modify norm yes
    body = ("compute fb all pair mlpot\nthermo_style custom step c_fb[1] c_u[1]\nthermo_modify norm no\n"
            + DUMP.format(every=1, name="out.dump") + "\nrun 0")
    res = run_lmp(deck(plugin, loaded.path, f"fallback {threshold!r}", body), tmp_path, nprocs=nprocs)
    d = read_dump(tmp_path / "out.dump")
    assert np.abs(d["fz"] - ref).max() < 1e-10, np.abs(d["fz"] - ref).max()
    assert np.abs(d["c_u[1]"] - std).max() < 1e-12  # the ML committee std, before the fallback
    lines = res.stdout.splitlines()
    row = lines[[k for k, l in enumerate(lines) if l.split()[:2] == ["Step", "c_fb[1]"]][0] + 1].split()
    n_fell = int(gate.last_mask.sum())
    assert float(row[1]) == n_fell and 0 < n_fell < L * L
    ml = loaded.module.compute_lattice(torch.tensor(Q), False)["forces"].numpy().ravel()
    fell = gate.last_mask.numpy().ravel()
    assert np.abs(d["fz"] - ml)[~fell].max() < 1e-12  # the others keep the ML force
    assert np.median(np.abs(d["fz"] - ml)[fell]) > 1e-3  # the fallen-back sites' forces did change


def test_tiled_rcb_decomposition_on_three_ranks(tmp_path, plugin, twins):
    """comm_style tiled + balance rcb (sub-domains that are not a processor grid) on 3 ranks = full grid."""
    L = 14
    Q = hot_field(L, seed=17)
    write_lattice_data(tmp_path / "lat.data", lattice_sites(Q), (L, L, 20.0))
    model = twins["holstein-d4-energy"]
    text = deck(plugin, model, body=DUMP.format(every=1, name="out.dump") + "\nrun 0")
    text = text.replace("processors * * 1\n", "comm_style tiled\n").replace("pair_style", "balance 1.0 rcb\npair_style", 1)
    run_lmp(text, tmp_path, nprocs=3)
    d = read_dump(tmp_path / "out.dump")
    ref = reference(model, Q)
    assert np.abs(d["fz"] - ref["forces"]).max() < 1e-12 and np.abs(d["c_u[1]"] - ref["forces_std"]).max() < 1e-12


@pytest.mark.parametrize("nprocs", [1, 2])
def test_fallback_until_step_is_the_hot_phase_only(tmp_path, plugin, fallback_twin, nprocs):
    """`fallback THRESHOLD until 2`: the forces of timesteps 0 and 1 are the Python GatedForces' (sites fell
    back, counted in c_fb[1]); from timestep 2 on they are the plain committee's and nothing falls back."""
    loaded, p = fallback_twin
    L = 14
    Q = hot_field(L, seed=21, scale=1.5)
    std = np.sort(loaded.module.compute_lattice(torch.tensor(Q), True)["forces_std"].numpy().ravel())
    threshold = float(0.5 * (std[L * L // 2] + std[L * L // 2 + 1]))  # about half the sites fall back at t = 0
    write_lattice_data(tmp_path / "lat.data", lattice_sites(Q), (L, L, 20.0), mass=p.m)
    dump = "dump {n} all custom 1 {n}.dump id x y z fz\ndump_modify {n} sort id format float %.17g"
    body = ("compute fb all pair mlpot\nthermo_style custom step c_fb[1]\nthermo_modify norm no\nthermo 1\n"
            "fix xy all setforce 0.0 0.0 NULL\nfix nve all nve\ntimestep 0.05\n"
            + dump.format(n="a") + "\nrun 1\nundump a\nrun 2\n" + dump.format(n="b") + "\nrun 0")
    res = run_lmp(deck(plugin, loaded.path, f"fallback {threshold!r} until 2", body), tmp_path, nprocs=nprocs)
    counts = {}
    for ln in res.stdout.splitlines():
        w = ln.split()
        if len(w) == 2 and w[0].isdigit() and w[1].replace(".", "", 1).isdigit():
            counts[int(w[0])] = float(w[1])
    assert set(counts) == {0, 1, 2, 3}, res.stdout[-2000:]
    assert counts[0] > 0 and counts[1] > 0 and counts[2] == 0 and counts[3] == 0, counts
    gate = GatedForces(loaded.module, p, threshold, radius=FALLBACK_RADIUS, n_moments=FALLBACK_MOMENTS,
                       max_fraction=None, until_step=2)
    for name, step in (("a", 1), ("b", 3)):
        d = read_dump(tmp_path / f"{name}.dump")
        Qs = torch.tensor(d["z"].reshape(L, L))
        gate.set_step(step)
        ref = gate(Qs).numpy().ravel()
        assert np.abs(d["fz"] - ref).max() < 1e-10, (step, np.abs(d["fz"] - ref).max())
        ml = loaded.module.compute_lattice(Qs, False)["forces"].numpy().ravel()
        if step == 1:
            assert int(gate.last_mask.sum()) == counts[1] and np.abs(d["fz"] - ml).max() > 1e-3
        else:
            assert np.abs(d["fz"] - ml).max() < 1e-12
