"""Real `lmp` and `mpiexec -n 2 lmp` runs: 1 vs 2 ranks, NVE energy conservation, restart, live
per-atom uncertainty (compute mlpot/atom vs ASE forces_std, fix halt, model_devi) and a message-passing
model whose interaction range is twice its cutoff (ghost centres)."""

import numpy as np
import pytest
import torch

from lammps_util import cuau, lammps_cell, plugin, read_dump, results, run_lmp, write_data  # noqa: F401
from mlpot_plugins import export, pretrained_path
from mlpot_plugins.ase import MLPotCalculator
from mlpot_plugins.models.base import AtomisticPotential

MODEL = str(pretrained_path("morse-cuau"))
COMMITTEE = str(pretrained_path("morse-cuau-committee"))


def deck(plugin, model, body, boundary="p p p", data="system.data", pair_extra=""):
    return f"""units metal
atom_style atomic
boundary {boundary}
atom_modify map array
plugin load {plugin}
read_data {data}
pair_style mlpot {model} {pair_extra}
pair_coeff * * Cu Au
{body}
"""


SNAPSHOT = """compute pe all pe/atom
compute sv all stress/atom NULL virial
dump d all custom 1 dump.atoms id fx fy fz c_pe c_sv[*]
dump_modify d format float %.17g
run 0
print "RESULT pe $(pe:%.17g) pxx $(pxx:%.17g) pxy $(pxy:%.17g) pyz $(pyz:%.17g)"
"""


def snapshot(tmp_path, plugin, atoms, model, nprocs, boundary="p p p", pair_extra=""):
    work = tmp_path / f"n{nprocs}"
    work.mkdir(exist_ok=True)
    write_data(work / "system.data", atoms)
    res = run_lmp(deck(plugin, model, SNAPSHOT, boundary, pair_extra=pair_extra), work, nprocs)
    return results(res.stdout), read_dump(work / "dump.atoms")


@pytest.mark.parametrize("boundary", ["p p p", "p f p"])
def test_one_and_two_ranks_agree(tmp_path, plugin, boundary):
    atoms = cuau((3, 3, 2), seed=7)
    atoms.set_cell(lammps_cell(11.1, 11.0, 7.4, 85.0, 95.0, 75.0), scale_atoms=True)
    if boundary != "p p p":
        atoms.center(vacuum=3.0, axis=1)
    r1, d1 = snapshot(tmp_path, plugin, atoms, MODEL, 1, boundary)
    r2, d2 = snapshot(tmp_path, plugin, atoms, MODEL, 2, boundary)
    for key in ("pe", "pxx", "pxy", "pyz"):
        assert r2[key] == pytest.approx(r1[key], rel=1e-10), key
    for col in d1:
        scale = np.abs(d1[col]).max()
        np.testing.assert_allclose(d2[col], d1[col], rtol=0, atol=1e-10 * scale, err_msg=col)
    # and the single rank equals ASE
    if boundary == "p p p":
        atoms.calc = MLPotCalculator(MODEL)
        assert r1["pe"] == pytest.approx(atoms.get_potential_energy(), rel=1e-12)
        f = np.stack([d1["fx"], d1["fy"], d1["fz"]], 1)
        np.testing.assert_allclose(f, atoms.get_forces(), atol=1e-10 * np.abs(f).max())


def test_nve_conserves_energy_on_two_ranks(tmp_path, plugin):
    """Velocity Verlet's energy error shrinks as dt^2 only if forces are the exact gradient of the energy."""
    atoms = cuau((3, 3, 3), a=3.65, rattle=0.0, gold_every=4)
    write_data(tmp_path / "system.data", atoms)
    errors = {}
    for dt, steps in ((0.002, 200), (0.001, 400)):
        body = f"""velocity all create 600 4928459 mom yes rot yes dist gaussian
timestep {dt}
fix nve all nve
thermo 100
run 0
variable e0 equal $(etotal:%.17g)
variable de equal abs(etotal-v_e0)
fix maxde all vector 1 v_de
run {steps}
print "RESULT ke $(ke:%.17g) de $(max(f_maxde):%.17g)"
"""
        r = results(run_lmp(deck(plugin, MODEL, body), tmp_path, 2).stdout)
        assert r["ke"] > 0.3 * len(atoms) * 1.5 * 600 * 8.617e-5 * 0.5  # atoms still move
        errors[dt] = r["de"] / len(atoms)
    print("max |E - E0| per atom:", errors)
    assert errors[0.002] < 2e-4, errors  # eV/atom over 0.4 ps at 600 K
    assert errors[0.002] / errors[0.001] == pytest.approx(4.0, rel=0.25), errors


def test_restart_continues_with_same_energies(tmp_path, plugin):
    atoms = cuau((2, 2, 2), a=3.65, rattle=0.05)
    write_data(tmp_path / "system.data", atoms)
    first = """velocity all create 300 12345
fix nve all nve
timestep 0.002
run 20
write_restart state.restart
run 10
print "RESULT pe $(pe:%.17g) etotal $(etotal:%.17g)"
"""
    r1 = results(run_lmp(deck(plugin, MODEL, first), tmp_path).stdout)
    second = f"""plugin load {plugin}
read_restart state.restart
fix nve all nve
timestep 0.002
run 10
print "RESULT pe $(pe:%.17g) etotal $(etotal:%.17g)"
"""
    # no pair_style/pair_coeff: the restart file holds them
    r2 = results(run_lmp(second, tmp_path, 2).stdout)
    assert r2["pe"] == pytest.approx(r1["pe"], rel=1e-10)
    assert r2["etotal"] == pytest.approx(r1["etotal"], rel=1e-10)


UNCERTAINTY = """compute u all mlpot/atom
dump d all custom 1 dump.atoms id c_u[1]
dump_modify d format float %.17g
run 0
"""


def assert_two_rank_std_equals_ase(tmp_path, plugin, model, atoms, min_std):
    """compute mlpot/atom on 2 ranks equals the ASE calculator's forces_std (which must be non-trivial)."""
    write_data(tmp_path / "system.data", atoms)
    run_lmp(deck(plugin, model, UNCERTAINTY), tmp_path, 2)
    got = read_dump(tmp_path / "dump.atoms")["c_u[1]"]
    calc = MLPotCalculator(model)
    atoms.calc = calc
    ref = calc.get_property("forces_std", atoms)
    assert ref.min() > min_std
    np.testing.assert_allclose(got, ref, rtol=1e-10)


def test_compute_mlpot_atom_equals_ase_forces_std(tmp_path, plugin):
    assert_two_rank_std_equals_ase(tmp_path, plugin, COMMITTEE, cuau((3, 2, 2), seed=8, rattle=0.2), 1e-4)


def test_fix_halt_on_uncertainty_and_model_devi(tmp_path, plugin):
    atoms = cuau((2, 2, 2), a=3.65, rattle=0.05)
    write_data(tmp_path / "system.data", atoms)
    calc = MLPotCalculator(COMMITTEE)
    atoms.calc = calc
    u0 = calc.get_property("forces_std", atoms).max()

    def run(threshold):
        body = f"""compute u all mlpot/atom
variable umax equal c_u[1]
velocity all create 300 777
fix nve all nve
timestep 0.002
thermo_style custom step pe c_u[1]
thermo 5
fix stop all halt 5 v_umax > {threshold} error continue
run 100
print "RESULT step $(step) umax $(c_u[1]:%.17g)"
"""
        return run_lmp(deck(plugin, COMMITTEE, body, pair_extra="model_devi model_devi.out every 10"),
                       tmp_path, 2)

    halted = run(0.5 * u0)
    r = results(halted.stdout)
    assert "Fix halt condition" in halted.stdout
    assert r["step"] == 5 and r["umax"] > 0.5 * u0
    calm = run(10.0 * u0)
    assert "Fix halt condition" not in calm.stdout
    assert results(calm.stdout)["step"] == 100
    # the second run appended to the first one's file (step 0 before the halt), one header line
    text = (tmp_path / "model_devi.out").read_text()
    assert text.count("#") == 1 and text.startswith("#")
    devi = np.loadtxt(tmp_path / "model_devi.out")
    assert devi.shape == (12, 7)
    np.testing.assert_array_equal(devi[:, 0], [0] + list(range(0, 101, 10)))
    assert devi[0, 4] == pytest.approx(u0, rel=1e-6)  # max_devi_f at step 0: the ASE value
    assert np.all(devi[:, 4] >= devi[:, 6]) and np.all(devi[:, 6] >= devi[:, 5])


class ToyMessagePassing(AtomisticPotential):
    """Two layers: h_i = sum_j env(r_ij) w(type_j); E_i = sum_j exp(-r_ij) env(r_ij) tanh(h_j) - 0.1 h_i,
    so E_i depends on atoms up to 2 cutoffs away (interaction_range = 2 * cutoff)."""

    def __init__(self, ensemble_size: int = 1):
        super().__init__(["Cu", "Au"], cutoff=3.0, ensemble_size=ensemble_size)
        weight = torch.tensor([[1.0, 1.7], [1.3, 1.4], [0.8, 2.0]], dtype=torch.float64)
        self.register_buffer("weight", weight[:ensemble_size])  # [K, species]: a committee

    def interaction_range(self) -> float:
        return 2.0 * self.cutoff

    def member_atom_energies(self, edge_vectors, edge_index, types):
        r = torch.linalg.norm(edge_vectors, dim=-1)
        x = (r / self.cutoff).clamp(max=1.0)
        env = (1.0 - x * x) ** 3
        k, n = edge_vectors.shape[0], types.shape[0]
        src, dst = edge_index[0], edge_index[1]
        w = self.weight.index_select(1, types.index_select(0, dst))
        zeros = torch.zeros((k, n), dtype=edge_vectors.dtype, device=edge_vectors.device)
        h = zeros.index_add(1, src, env * w)
        msg = torch.exp(-r) * env * torch.tanh(h.index_select(1, dst))
        return zeros.index_add(1, src, msg) - 0.1 * h


def assert_message_passing_ranks_equal_ase(tmp_path, plugin, path):
    """A triclinic 108-atom cell whose ghost shell needs ghost centres: energy, pressure, forces and
    per-atom energies of LAMMPS on 1 and 2 ranks equal ASE. Returns the atoms (with the ASE calculator)."""
    atoms = cuau((3, 3, 3), a=3.0, seed=9, rattle=0.1)
    atoms.set_cell(lammps_cell(9.0, 9.0, 9.0, 90, 90, 80), scale_atoms=True)
    atoms.calc = MLPotCalculator(path)
    r1, d1 = snapshot(tmp_path, plugin, atoms, path, 1)
    r2, d2 = snapshot(tmp_path, plugin, atoms, path, 2)
    assert r1["pe"] == pytest.approx(atoms.get_potential_energy(), rel=1e-12)
    assert r2["pe"] == pytest.approx(r1["pe"], rel=1e-10)
    f_ref = atoms.get_forces()
    for d in (d1, d2):
        f = np.stack([d["fx"], d["fy"], d["fz"]], 1)
        np.testing.assert_allclose(f, f_ref, rtol=0, atol=1e-10 * np.abs(f_ref).max())
        np.testing.assert_allclose(d["c_pe"], atoms.get_potential_energies(), rtol=0, atol=1e-11)
    assert r2["pxy"] == pytest.approx(r1["pxy"], rel=1e-9)
    return atoms


def test_message_passing_model_uses_ghost_centres(tmp_path, plugin):
    assert_message_passing_ranks_equal_ase(tmp_path, plugin, export(ToyMessagePassing(), tmp_path / "toy-mp.pt"))


def test_message_passing_committee_uncertainty_on_two_ranks(tmp_path, plugin):
    """Member forces of ghost centres and ghost neighbours are summed into their owners before the std."""
    path = export(ToyMessagePassing(ensemble_size=3), tmp_path / "toy-mp-committee.pt")
    assert_two_rank_std_equals_ase(tmp_path, plugin, path, cuau((3, 3, 3), a=3.0, seed=10, rattle=0.1), 1e-3)
