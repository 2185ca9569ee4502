"""model_devi (DP-GEN format) and compute mlpot/atom's per-atom array and global vector against the
member outputs of the same committee computed in Python (LoadedModel.compute_on, no ghosts), on 1 and
2 ranks; plus regressions of the plugin's review defects (re-issued pair_style with a larger committee,
ghost cutoff given back, non-ASCII model path)."""
import shutil
from typing import Dict

import numpy as np
import pytest
import torch

from lammps_util import cuau, plugin, read_dump, run_lmp, write_data  # noqa: F401
from mlpot_plugins import export, load
from mlpot_plugins.models.reference import MorsePotential

SCALE = 2.5  # uncertainty_scale of the test committee: calibrated = SCALE * uncalibrated


@pytest.fixture(scope="module")
def committee(tmp_path_factory):
    d = tmp_path_factory.mktemp("committee")
    return export(MorsePotential(["Cu", "Au"], cutoff=5.0, ensemble_size=4, spread=0.05, seed=3,
                                 uncertainty_scale=SCALE), d / "morse-k4.pt")


def reference(path, atoms):
    """DeePMD's definitions from the member outputs: per-atom force deviation
    sqrt(mean_k |F_k - <F>|^2), virial deviation std_k(W_k,ab) / N per component."""
    model = load(path)
    types = [model.species.index(s) for s in atoms.get_chemical_symbols()]
    out = model.compute_on(atoms.positions, atoms.cell.array, atoms.pbc, types, need_virial=True,
                           need_uncertainty=True)
    mf = out["member_forces"].numpy()
    mv = out["member_virial"].numpy().reshape(len(mf), 9)
    mean_v = mv.mean(0)
    return {"f": np.sqrt(((mf - mf.mean(0)) ** 2).sum(-1).mean(0)),
            "v": np.sqrt(((mv - mean_v) ** 2).mean(0)) / len(atoms),
            "e_atoms": out["energies_std"].numpy(), "e_total": float(out["energy_std"]),
            "member_virial": out["member_virial"].numpy(), "member_energy": out["member_energy"].numpy()}


DECK = """units metal
atom_style atomic
atom_modify map array
plugin load {plugin}
read_data system.data
pair_style mlpot {model} model_devi devi.out every 1 atomic
pair_coeff * * Cu Au
compute u all mlpot/atom
dump d all custom 1 dump.atoms id c_u[1] c_u[2]
dump_modify d format float %.17g
thermo_style custom step pe c_u[1] c_u[2] c_u[3] c_u[4]
run 0
print "RESULT fmax $(c_u[1]:%.17g) fmean $(c_u[2]:%.17g) emax $(c_u[3]:%.17g) etot $(c_u[4]:%.17g)"
pair_style mlpot {model} model_devi devi_cal.out every 1 calibrated
run 0
"""


def results(stdout):
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            w = line.split()[1:]
            return {k: float(v) for k, v in zip(w[::2], w[1::2])}
    raise AssertionError(stdout[-2000:])


@pytest.mark.parametrize("nprocs", [1, 2])
def test_model_devi_and_compute_equal_python(tmp_path, plugin, committee, nprocs):
    atoms = cuau((3, 2, 2), seed=5, rattle=0.15)
    write_data(tmp_path / "system.data", atoms)
    ref = reference(committee, atoms)
    assert ref["f"].min() > 1e-3 and ref["v"].min() > 1e-5  # non-trivial deviations
    res = run_lmp(DECK.format(plugin=plugin, model=committee), tmp_path, nprocs)
    n = len(atoms)

    # model_devi: uncalibrated by default, virial columns from member virials, atomic columns in id order
    devi = np.loadtxt(tmp_path / "devi.out", ndmin=2)
    assert devi.shape == (1, 7 + n) and devi[0, 0] == 0
    np.testing.assert_allclose(devi[0, 1:4], [ref["v"].max(), ref["v"].min(), ref["v"].mean()], rtol=2e-6)
    np.testing.assert_allclose(devi[0, 4:7], [ref["f"].max(), ref["f"].min(), ref["f"].mean()], rtol=2e-6)
    np.testing.assert_allclose(devi[0, 7:], ref["f"], rtol=2e-6)
    cal = np.loadtxt(tmp_path / "devi_cal.out", ndmin=2)
    assert cal.shape == (1, 7)
    np.testing.assert_allclose(cal[0, 1:7], SCALE * devi[0, 1:7], rtol=2e-6)

    # compute mlpot/atom: calibrated per-atom force std and energy std; the global vector
    d = read_dump(tmp_path / "dump.atoms")
    np.testing.assert_allclose(d["c_u[1]"], SCALE * ref["f"], rtol=1e-10)
    np.testing.assert_allclose(d["c_u[2]"], ref["e_atoms"], rtol=1e-10, atol=1e-14)
    r = results(res.stdout)
    assert r["fmax"] == pytest.approx(SCALE * ref["f"].max(), rel=1e-10)
    assert r["fmean"] == pytest.approx(SCALE * ref["f"].mean(), rel=1e-10)
    assert r["emax"] == pytest.approx(ref["e_atoms"].max(), rel=1e-10)
    assert r["etot"] == pytest.approx(ref["e_total"], rel=1e-9)


def test_member_virial_is_each_members_strain_derivative(committee):
    """W_k[a][b] = -dE_k/d(eps_ba) for a homogeneous strain x -> (1 + eps) x (central differences)."""
    atoms = cuau((2, 2, 2), seed=2, rattle=0.1)
    w = reference(committee, atoms)["member_virial"]
    h = 1e-6
    deriv = np.zeros_like(w)
    for a in range(3):
        for b in range(3):
            e = []
            for s in (h, -h):
                strained = atoms.copy()
                eps = np.eye(3)
                eps[b, a] += s
                strained.set_cell(atoms.cell.array @ eps.T, scale_atoms=True)
                e.append(reference(committee, strained)["member_energy"])
            deriv[:, a, b] = (e[0] - e[1]) / (2 * h)
    np.testing.assert_allclose(w, -deriv, atol=1e-6 * np.abs(w).max())
    assert np.abs(w - w.mean(0)).max() > 1e-3  # the members really differ


def test_model_devi_appends_on_continued_runs(tmp_path, plugin, committee):
    """A continued run (same deck again, e.g. from a restart) appends; the header is written once."""
    write_data(tmp_path / "system.data", cuau((2, 2, 2), seed=1))
    deck = f"""units metal
atom_style atomic
plugin load {plugin}
read_data system.data
pair_style mlpot {committee} model_devi devi.out every 5
pair_coeff * * Cu Au
velocity all create 300 5
fix nve all nve
run 10
run 5
"""
    run_lmp(deck, tmp_path)
    run_lmp(deck, tmp_path)
    text = (tmp_path / "devi.out").read_text()
    assert text.count("#") == 1 and text.startswith("#")
    steps = np.loadtxt(tmp_path / "devi.out")[:, 0]
    np.testing.assert_array_equal(steps, [0, 5, 10, 10, 15] * 2)


def test_reissued_pair_style_with_larger_committee(tmp_path, plugin, committee):
    """K=2, then K=4 (the per-atom member buffer must grow: it was sized for the first K), both equal
    Python's calibrated forces_std."""
    small = export(MorsePotential(["Cu", "Au"], cutoff=5.0, ensemble_size=2, spread=0.05, seed=9),
                   tmp_path / "k2.pt")
    atoms = cuau((3, 3, 2), seed=4, rattle=0.1)
    write_data(tmp_path / "system.data", atoms)
    deck = f"""units metal
atom_style atomic
atom_modify map array
plugin load {plugin}
read_data system.data
pair_style mlpot {small}
pair_coeff * * Cu Au
compute u all mlpot/atom
dump d all custom 1 k2.dump id c_u[1]
dump_modify d format float %.17g
run 0
undump d
pair_style mlpot {committee}
dump d all custom 1 k4.dump id c_u[1]
dump_modify d format float %.17g
run 0
"""
    run_lmp(deck, tmp_path, 2)
    for name, path in (("k2.dump", small), ("k4.dump", committee)):
        got = read_dump(tmp_path / name)["c_u[1]"]
        model = load(path)
        out = model.compute_on(atoms.positions, atoms.cell.array, atoms.pbc,
                               [model.species.index(s) for s in atoms.get_chemical_symbols()],
                               need_uncertainty=True)
        np.testing.assert_allclose(got, out["forces_std"].numpy(), rtol=1e-10, err_msg=name)


def test_ghost_cutoff_given_back(tmp_path, plugin, committee):
    """A message-passing model with images as ghost rows (always on several ranks; `images ghosts` here on one)
    raises the ghost cutoff to interaction_range + skin; a re-issued pair_style with a shorter range, or
    another pair style, gets the user's setting back."""
    from test_lammps_mpi import ToyMessagePassing

    mp = export(ToyMessagePassing(), tmp_path / "mp.pt")  # cutoff 3, interaction range 6
    write_data(tmp_path / "system.data", cuau((3, 3, 3), a=3.0, rattle=0.05))
    deck = f"""units metal
atom_style atomic
plugin load {plugin}
read_data system.data
comm_modify cutoff 5.5
pair_style mlpot {mp} images ghosts
pair_coeff * * Cu Au
run 0
pair_style mlpot {committee}
run 0
pair_style zero 3.0
pair_coeff * *
run 0
"""
    # 6 + skin 2; then a model of cutoff 5 (no ghost centres): 5 + 2; then pair zero: the user's 5.5
    res = run_lmp(deck, tmp_path)
    cutoffs = [float(line.split("=")[1].split()[0]) for line in res.stdout.splitlines()
               if "ghost atom cutoff" in line]
    assert cutoffs == pytest.approx([8.0, 7.0, 5.5]), cutoffs


def test_non_ascii_model_path(tmp_path, plugin, committee):
    """LAMMPS rewrites non-ASCII characters of input lines, so such a path cannot reach the plugin
    intact: the error says so and how to fix it (the ASCII path of the same file works)."""
    target = tmp_path / "modèle-Ω"
    target.mkdir()
    shutil.copy(committee, target / "médaille.pt")
    (tmp_path / "ascii.pt").symlink_to(target / "médaille.pt")
    write_data(tmp_path / "system.data", cuau((2, 2, 2)))
    deck = """units metal
atom_style atomic
plugin load {plugin}
read_data system.data
pair_style mlpot {model}
pair_coeff * * Cu Au
run 0
print "RESULT pe $(pe:%.17g)"
"""
    res = run_lmp(deck.format(plugin=plugin, model=target / "médaille.pt"), tmp_path, check=False)
    err = [line for line in res.stdout.splitlines() if line.startswith("ERROR")]
    assert res.returncode > 0 and err and "non-ASCII" in err[0] and "ASCII characters only" in err[0]
    assert "pe" in results(run_lmp(deck.format(plugin=plugin, model=tmp_path / "ascii.pt"), tmp_path).stdout)


class NoMemberVirial(MorsePotential):
    """A committee as exported before the contract had member_virial."""

    @torch.jit.export
    def compute(self, positions: torch.Tensor, types: torch.Tensor, edge_index: torch.Tensor,
                shifts: torch.Tensor, n_local: int, need_virial: bool,
                need_uncertainty: bool) -> Dict[str, torch.Tensor]:
        out = self.evaluate(positions, types, edge_index, shifts, n_local, need_virial, need_uncertainty, False)
        if "member_virial" in out:
            out.pop("member_virial")
        return out


def test_model_devi_without_member_virial(tmp_path, plugin):
    """Older committee files: virial columns 0, one warning naming the fix, force columns still right."""
    path = export(NoMemberVirial(["Cu", "Au"], cutoff=5.0, ensemble_size=3, spread=0.05, seed=2),
                  tmp_path / "old.pt")
    write_data(tmp_path / "system.data", cuau((2, 2, 2), seed=3))
    deck = f"""units metal
atom_style atomic
plugin load {plugin}
read_data system.data
pair_style mlpot {path} model_devi devi.out every 2
pair_coeff * * Cu Au
velocity all create 300 5
fix nve all nve
run 4
"""
    res = run_lmp(deck, tmp_path)
    warnings = [l for l in res.stdout.splitlines() if l.startswith("WARNING") and "member_virial" in l]
    assert len(warnings) == 1 and "re-export" in warnings[0]
    devi = np.loadtxt(tmp_path / "devi.out")
    assert devi.shape == (3, 7) and np.all(devi[:, 1:4] == 0) and np.all(devi[:, 4] > 1e-4)


def test_compressed_lattice_energy_std(tmp_path, plugin):
    """Issue 11's symmetric out-of-distribution state: a perfect fcc lattice compressed by 10 % (here under
    the shipped Morse committee; the cu-emt deck's comments give the trained model's numbers): every
    member's forces vanish by symmetry (force std 0), the energy std does not; compute mlpot/atom reports
    both, equal to Python's energies_std / energy_std."""
    from ase.build import bulk

    from mlpot_plugins import pretrained_path

    atoms = bulk("Cu", "fcc", a=0.9 * 3.75, cubic=True).repeat(2)
    write_data(tmp_path / "system.data", atoms, elements=("Cu",))
    deck = f"""units metal
atom_style atomic
atom_modify map array
plugin load {plugin}
read_data system.data
pair_style mlpot morse-cuau-committee
pair_coeff * * Cu
compute u all mlpot/atom
dump d all custom 1 dump.atoms id c_u[1] c_u[2]
dump_modify d format float %.17g
run 0
print "RESULT fmax $(c_u[1]:%.17g) emax $(c_u[3]:%.17g) etot $(c_u[4]:%.17g)"
"""
    r = results(run_lmp(deck, tmp_path).stdout)
    model = load(pretrained_path("morse-cuau-committee"))
    out = model.compute_on(atoms.positions, atoms.cell.array, atoms.pbc, [0] * len(atoms), False, True)
    assert r["fmax"] < 1e-10
    assert r["etot"] == pytest.approx(float(out["energy_std"]), rel=1e-9) and r["etot"] > 0.5
    d = read_dump(tmp_path / "dump.atoms")
    np.testing.assert_allclose(d["c_u[2]"], out["energies_std"].numpy(), rtol=1e-9)
    assert r["emax"] == pytest.approx(d["c_u[2]"].max(), rel=1e-12)
