"""pair_style mlpot runs the shipped message-passing committee cu-emt layer by layer (contract "Message passing
layer by layer"): ghosts one cutoff deep, features forward- and gradients reverse-communicated. 1, 2 and 4 ranks
equal the ASE calculator (whole periodic system, no ghosts) to 1e-10: energy, forces, per-atom energies and
virials, pressure and the per-atom committee std of compute mlpot/atom. On one rank the periodic images are folded
onto their atoms by default (`images fold`: one compute() call on the local atoms, like ASE); `images ghosts` keeps
them as ghost rows, so the layer-by-layer path is tested on one rank too."""
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from lammps_util import lammps_cell, lmp_factory, plugin, read_dump, results, run_lmp, write_data  # noqa: F401
from mlpot_plugins import pretrained_path
from mlpot_plugins.ase import MLPotCalculator

MODEL = str(pretrained_path("cu-emt"))

DECK = """units metal
atom_style atomic
boundary p p p
atom_modify map array
plugin load {plugin}
read_data system.data
pair_style mlpot {model} {extra}
pair_coeff * * Cu
compute pe all pe/atom
compute sv all stress/atom NULL virial
compute u all mlpot/atom
variable layerwise equal 0
dump d all custom 1 dump.atoms id fx fy fz c_pe c_sv[*] c_u[*]
dump_modify d format float %.17g
thermo_style custom step pe press pxx pyy pzz pxy pxz pyz
run 0
print "RESULT pe $(pe:%.17g) pxx $(pxx:%.17g) pyy $(pyy:%.17g) pzz $(pzz:%.17g) pxy $(pxy:%.17g) pxz $(pxz:%.17g) pyz $(pyz:%.17g) vol $(vol:%.17g)"
"""


def cu_cell(seed=4):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((3, 3, 2))
    atoms.set_cell(lammps_cell(10.8, 10.9, 7.3, 88.0, 93.0, 84.0), scale_atoms=True)
    atoms.rattle(0.12, rng=np.random.default_rng(seed))
    atoms.wrap()
    return atoms


def run(tmp_path, plugin, atoms, nprocs, extra="", model=MODEL):
    work = tmp_path / f"n{nprocs}{extra.replace(' ', '')}"
    work.mkdir()
    write_data(work / "system.data", atoms, elements=("Cu",))
    res = run_lmp(DECK.format(plugin=plugin, model=model, extra=extra), work, nprocs, timeout=300)
    return res.stdout, results(res.stdout), read_dump(work / "dump.atoms")


@pytest.fixture(scope="module")
def ase_reference():
    atoms = cu_cell()
    calc = MLPotCalculator(MODEL)
    atoms.calc = calc
    stress = atoms.get_stress(voigt=False)
    return atoms, {"pe": atoms.get_potential_energy(), "forces": atoms.get_forces(),
                   "energies": atoms.get_potential_energies(), "stress": stress,
                   "std": calc.get_property("forces_std", atoms)}


# cu-emt as exported before stop 26 (mp_edges returned one concatenated tensor, now a list): still accepted
V1_MODEL = str(Path(__file__).parent / "data" / "cu-emt-layerwise-v1.pt")


@pytest.mark.parametrize("nprocs, extra, model", [(1, "", MODEL), (1, "images ghosts", MODEL), (2, "", MODEL),
                                                  (4, "", MODEL), (2, "", V1_MODEL)])
def test_ranks_equal_ase_layer_by_layer(tmp_path, plugin, ase_reference, nprocs, extra, model):
    atoms, ref = ase_reference
    stdout, r, d = run(tmp_path, plugin, atoms, nprocs, extra, model)
    assert "runs layer by layer (2 layers" in stdout
    assert ("periodic images folded onto their atoms" in stdout) == (nprocs == 1 and not extra)
    assert r["pe"] == pytest.approx(ref["pe"], rel=1e-12)
    f = np.stack([d["fx"], d["fy"], d["fz"]], 1)
    np.testing.assert_allclose(f, ref["forces"], rtol=0, atol=1e-10 * np.abs(ref["forces"]).max())
    np.testing.assert_allclose(d["c_pe"], ref["energies"], rtol=0, atol=1e-10 * np.abs(ref["energies"]).max())
    # pressure (bar) = -stress (no velocities: virial only); the per-atom virials (bar A^3) add up to it
    bar = 1.6021765e6  # eV/A^3 -> bar, LAMMPS metal units (force->nktv2p)
    p = np.array([r["pxx"], r["pyy"], r["pzz"], r["pxy"], r["pxz"], r["pyz"]])
    s = ref["stress"]
    p_ref = -np.array([s[0, 0], s[1, 1], s[2, 2], s[0, 1], s[0, 2], s[1, 2]]) * bar
    np.testing.assert_allclose(p, p_ref, rtol=0, atol=1e-10 * np.abs(p_ref).max())
    sv = np.stack([d[f"c_sv[{k}]"] for k in range(1, 7)], 1)
    np.testing.assert_allclose(-sv.sum(0) / r["vol"], p_ref, rtol=0, atol=1e-10 * np.abs(p_ref).max())
    assert ref["std"].min() > 1e-4
    np.testing.assert_allclose(d["c_u[1]"], ref["std"], rtol=1e-10)


@pytest.mark.parametrize("nprocs, extra", [(2, "layerwise no"), (1, "layerwise no"),
                                           (1, "layerwise no images ghosts")])
def test_layerwise_no_keeps_the_wide_ghost_shell(tmp_path, plugin, ase_reference, nprocs, extra):
    """`layerwise no` (and every model without the mp_* methods) runs compute() on ghosts up to
    interaction_range: the same numbers by the old path; on one rank with folded images, on the local atoms only."""
    atoms, ref = ase_reference
    stdout, r, d = run(tmp_path, plugin, atoms, nprocs, extra)
    assert "runs as one call on ghost atoms up to its interaction_range" in stdout
    assert ("periodic images folded" in stdout) == ("images" not in extra and nprocs == 1)
    assert r["pe"] == pytest.approx(ref["pe"], rel=1e-12)
    f = np.stack([d["fx"], d["fy"], d["fz"]], 1)
    np.testing.assert_allclose(f, ref["forces"], rtol=0, atol=1e-10 * np.abs(ref["forces"]).max())


MD = """units metal
atom_style atomic
boundary p p p
atom_modify map array
plugin load {plugin}
read_data system.data
pair_style mlpot {model}
pair_coeff * * Cu
neighbor 0.3 bin
neigh_modify every 1 delay 0 check yes
velocity all create 900 4928459 mom yes rot yes
fix nve all nve
timestep 0.004
run 12
dump d all custom 1 dump.atoms id fx fy fz
dump_modify d format float %.17g
run 0
print "RESULT pe $(pe:%.17g) pxy $(pxy:%.17g)"
"""


def test_md_on_one_and_two_ranks_agree(tmp_path, plugin):
    """12 hot MD steps with re-neighbouring every step (atoms change ranks and ghost lists change): the
    layer-wise exchange stays exact, so 1 and 2 ranks follow the same trajectory."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((3, 3, 3))
    out = []
    for nprocs in (1, 2):
        work = tmp_path / f"md{nprocs}"
        work.mkdir()
        write_data(work / "system.data", atoms, elements=("Cu",))
        res = run_lmp(MD.format(plugin=plugin, model=MODEL), work, nprocs, timeout=300)
        out.append((results(res.stdout), read_dump(work / "dump.atoms")))
    (r1, d1), (r2, d2) = out
    assert r2["pe"] == pytest.approx(r1["pe"], rel=1e-10) and r2["pxy"] == pytest.approx(r1["pxy"], rel=1e-8)
    f1, f2 = (np.stack([d["fx"], d["fy"], d["fz"]], 1) for d in (d1, d2))
    assert np.abs(f1).max() > 0.1  # the crystal is hot: real forces
    np.testing.assert_allclose(f2, f1, rtol=0, atol=1e-9 * np.abs(f1).max())


@pytest.mark.parametrize("extra", ["", "edges device"])
def test_rank_without_atoms(tmp_path, plugin, extra):
    """A cluster in one half of an open box on 2 ranks: the other rank has no atoms (and no edges, no pair
    candidates) but takes part in every exchange; energy and forces equal ASE's for the free cluster."""
    from ase.cluster import Octahedron

    atoms = Octahedron("Cu", 3, 0)  # 19 atoms
    atoms.rattle(0.05, rng=np.random.default_rng(2))
    atoms.set_cell([30.0, 12.0, 12.0])
    atoms.positions += np.array([7.0, 6.0, 6.0]) - atoms.positions.mean(0)  # all at x < 15
    atoms.pbc = False
    work = tmp_path / "cluster"
    work.mkdir()
    write_data(work / "system.data", atoms, elements=("Cu",))
    deck = DECK.replace("boundary p p p", "boundary f f f")
    res = run_lmp("processors 2 1 1\n" + deck.format(plugin=plugin, model=MODEL, extra=extra), work, 2, timeout=300)
    r, d = results(res.stdout), read_dump(work / "dump.atoms")
    atoms.calc = MLPotCalculator(MODEL)
    assert r["pe"] == pytest.approx(atoms.get_potential_energy(), rel=1e-12)
    f = np.stack([d["fx"], d["fy"], d["fz"]], 1)
    np.testing.assert_allclose(f, atoms.get_forces(), rtol=0, atol=1e-10 * np.abs(f).max())


@pytest.mark.parametrize("extra", ["", "layerwise no"])
def test_one_rank_folds_images_onto_local_atoms(tmp_path, lmp_factory, extra):
    """One rank, a cell smaller than the interaction range (an atom's images are its own neighbours): with folded
    images the model sees exactly the N local atoms (no ghost rows), and the energy is that of `images ghosts`
    (ghost rows one cutoff deep, or the whole 2-cutoff shell with `layerwise no`) and of ASE."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))  # 7.2 A cell < 2 x 4 A range
    atoms.rattle(0.1, rng=np.random.default_rng(7))
    write_data(tmp_path / "system.data", atoms, elements=("Cu",))
    out = {}
    for images in ("fold", "ghosts"):
        lmp = lmp_factory()
        try:
            for cmd in ["units metal", "atom_style atomic", f"read_data {tmp_path / 'system.data'}",
                        f"pair_style mlpot {MODEL} {extra} images {images}", "pair_coeff * * Cu", "thermo 0",
                        "run 0"]:
                lmp.command(cmd)
            out[images] = (lmp.extract_pair("model_rows"), lmp.extract_pair("images_folded"),
                           lmp.get_thermo("pe"))
        finally:
            lmp.close()
    assert out["fold"][:2] == (len(atoms), 1.0)
    assert out["ghosts"][1] == 0.0 and out["ghosts"][0] > 3 * len(atoms)
    atoms.calc = MLPotCalculator(MODEL)
    e = atoms.get_potential_energy()
    assert out["fold"][2] == pytest.approx(e, rel=1e-12) and out["ghosts"][2] == pytest.approx(e, rel=1e-12)


def test_every_rank_reports_its_exchange_time(tmp_path, plugin):
    """MLPOT_TIMING=1 on 2 ranks: each rank prints its model time and the time in the layer-wise exchanges (of
    which the LAMMPS/MPI communication, waits included, is a part): the numbers a user needs to see whether
    ranks wait for each other."""
    import re

    work = tmp_path / "timing"
    work.mkdir()
    write_data(work / "system.data", cu_cell(), elements=("Cu",))
    res = run_lmp(DECK.format(plugin=plugin, model=MODEL, extra=""), work, 2, timeout=300,
                  env={"MLPOT_TIMING": "1"})
    lines = re.findall(r"mlpot timing \(rank (\d)\): ([0-9.]+) s in pair_style mlpot, ([0-9.]+) s in the model, "
                       r"([0-9.]+) s in the layer-wise feature exchanges \(([0-9.]+) s of it in LAMMPS/MPI",
                       res.stderr + res.stdout)
    assert sorted(int(line[0]) for line in lines) == [0, 1], res.stderr[-2000:]
    for _, pair, model, exchange, mpi in lines:
        pair, model, exchange, mpi = map(float, (pair, model, exchange, mpi))
        assert 0.0 < mpi <= exchange and 0.0 < model and model + exchange <= pair * 1.0001


def expected_rows(atoms, cutoff, owned):
    """Rows a rank needs when every periodic image shares its atom's row: its owned atoms plus every atom ID with
    some image within the cutoff of an owned atom (ASE's periodic neighbour list, independent of LAMMPS)."""
    from ase.neighborlist import neighbor_list

    i, j = neighbor_list("ij", atoms, cutoff)
    return len(set(np.flatnonzero(owned)) | set(j[owned[i]]))


@pytest.mark.parametrize("repeat", [(6, 3, 3), (4, 2, 1)])
def test_two_ranks_share_one_row_per_atom_id(tmp_path, plugin, repeat):
    """2 ranks split along x (`processors 2 1 1`), periodic in y and z with one rank each: ghosts that are images of
    a rank's own atoms share that atom's row, and all images of another rank's atom share one ghost row. Each rank
    then holds exactly its atoms plus the other rank's atoms within one cutoff (counted by ASE), far fewer rows than
    with `images ghosts`, and both give the same energy, forces and committee std. (4, 2, 1): a 3.6 A thick cell,
    so an atom's own images are its neighbours (edges from a row to itself, with the shift)."""
    import re

    from mlpot_plugins.model_file import load

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(repeat)
    atoms.rattle(0.1, rng=np.random.default_rng(11))
    atoms.wrap()
    cutoff = float(load(MODEL).metadata["cutoff"])
    out = {}
    for images in ("fold", "ghosts"):
        work = tmp_path / images
        work.mkdir()
        write_data(work / "system.data", atoms, elements=("Cu",))
        res = run_lmp("processors 2 1 1\n" + DECK.format(plugin=plugin, model=MODEL, extra=f"images {images}"),
                      work, 2, timeout=300, env={"MLPOT_TIMING": "1"})
        rows = dict((int(r), (int(n), int(o))) for r, n, o in re.findall(
            r"mlpot timing \(rank (\d)\):.*last evaluation: (\d+) model rows, (\d+) of them owned", res.stderr))
        assert sorted(rows) == [0, 1], res.stderr[-2000:]
        assert ("share one row per atom ID" in res.stdout) == (images == "fold")
        out[images] = rows, results(res.stdout), read_dump(work / "dump.atoms")
    half = atoms.get_scaled_positions()[:, 0] < 0.5  # LAMMPS's uniform 2 x 1 x 1 split of the box
    for rank, owned in ((0, half), (1, ~half)):
        n_rows, n_owned = out["fold"][0][rank]
        assert n_owned == owned.sum()
        assert n_rows == expected_rows(atoms, cutoff, owned)
        assert out["ghosts"][0][rank][0] > 1.5 * n_rows  # the y/z images were rows of their own
    (_, r1, d1), (_, r2, d2) = out["fold"], out["ghosts"]
    assert r1["pe"] == pytest.approx(r2["pe"], rel=1e-12)
    for col in ("fx", "fy", "fz", "c_pe", "c_u[1]", "c_sv[4]"):
        np.testing.assert_allclose(d1[col], d2[col], rtol=0, atol=1e-10 * np.abs(d2[col]).max())
