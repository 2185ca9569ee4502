"""Last-layer (LLPR) uncertainty on member 0 of the shipped cu-emt committee: base outputs unchanged,
symmetry of sigma, growth out of distribution, and the same per-atom force std in ASE, LAMMPS and OpenMM."""
import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT

from lammps_util import plugin, read_dump, run_lmp, write_data  # noqa: F401
from mlpot_plugins import export, load
from mlpot_plugins.ase import MLPotCalculator
from mlpot_plugins.cli import main
from mlpot_plugins.llpr import LastLayerUncertainty, single_model
from mlpot_plugins.neighbors import neighbor_list
from mlpot_plugins.refdata import label


def cu_frames(n, seed, amplitude=0.08, a=3.61, repeat=2):
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat(repeat)
        atoms.positions += rng.normal(0.0, amplitude, atoms.positions.shape)
        frames.append(label(atoms, EMT()))
    return frames


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import ase.io

    d = tmp_path_factory.mktemp("llpr")
    ase.io.write(d / "train.extxyz", cu_frames(8, 0))
    ase.io.write(d / "val.extxyz", cu_frames(4, 1))
    assert main(["llpr", "cu-emt", "--member", "0", "--data", str(d / "train.extxyz"), "--val",
                 str(d / "val.extxyz"), "-o", str(d / "llpr.pt")]) == 0
    committee = load("cu-emt")
    single = export(single_model(committee, 0), d / "member0.pt",
                    extra={"hparams": committee.metadata["extra"]["hparams"]})
    return {"llpr": d / "llpr.pt", "single": single, "dir": d}


def evaluate(path, atoms):
    return load(path).compute_on(atoms.positions, atoms.cell.array, atoms.pbc, [0] * len(atoms), True, True)


def test_base_outputs_unchanged_and_uncertainty_outputs(files):
    atoms = cu_frames(1, 5, amplitude=0.1)[0]
    out, base = evaluate(files["llpr"], atoms), evaluate(files["single"], atoms)
    for key in ("energy", "energies", "forces", "virial", "atom_virial"):
        assert torch.equal(out[key], base[key]), key
    member0 = evaluate("cu-emt", atoms)["member_forces"][0]
    np.testing.assert_allclose(out["forces"].numpy(), member0.numpy(), atol=1e-12)
    meta = load(files["llpr"]).metadata
    assert meta["ensemble_size"] == 2 and meta["extra"]["uncertainty"] == "llpr"
    assert meta["uncertainty_scale"] == pytest.approx(meta["extra"]["llpr"]["force_scale"])
    std = out["forces_std"].numpy()
    assert std.shape == (len(atoms),) and (std > 0).all()
    # the pseudo-members are symmetric about the base forces, so engines' force_uncertainty gives forces_std
    np.testing.assert_allclose(out["member_forces"].mean(0).numpy(), out["forces"].numpy(), atol=1e-12)
    # forces_std = s_F (u_i + w sum_{j in N(i)} u_j), energies_std = alpha u_i
    info = meta["extra"]["llpr"]
    u = out["energies_std"].numpy() / info["energy_scale"]
    ei, _ = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, meta["cutoff"])
    agg = u.copy()
    np.add.at(agg, ei[1], info["neighbour_weight"] * u[ei[0]])
    np.testing.assert_allclose(std, info["force_scale"] * agg, rtol=1e-10)


def test_sigma_invariant_under_rotation_and_permutation(files):
    atoms = cu_frames(1, 6, amplitude=0.1)[0]
    ref = evaluate(files["llpr"], atoms)
    rot = atoms.copy()
    q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(3, 3)))
    rot.set_cell(atoms.cell.array @ q.T, scale_atoms=False)
    rot.positions = atoms.positions @ q.T
    perm = np.random.default_rng(3).permutation(len(atoms))
    for other, order in ((rot, np.arange(len(atoms))), (atoms[perm], perm)):
        out = evaluate(files["llpr"], other)
        for key in ("forces_std", "energies_std"):
            np.testing.assert_allclose(out[key].numpy(), ref[key].numpy()[order], rtol=1e-9, atol=1e-14)
        assert float(out["energy_std"]) == pytest.approx(float(ref["energy_std"]), rel=1e-9)


def test_sigma_grows_out_of_distribution(files):
    ind = np.median([evaluate(files["llpr"], a)["forces_std"].numpy() for a in cu_frames(2, 7)])
    compressed = cu_frames(2, 8, a=3.61 * 0.88)
    ood = np.median([evaluate(files["llpr"], a)["forces_std"].numpy() for a in compressed])
    assert ood > 3 * ind


def test_same_per_atom_std_in_ase_lammps_openmm(files, plugin, tmp_path):
    import openmm
    import openmm.app as app

    from mlpot_plugins import units
    from mlpot_plugins.openmm import UncertaintyReporter, create_force, read_uncertainty
    from openmm_systems import empty_system, topology_of

    # the fitted file with a neighbour weight forced > 0, so ghost rows carry part of the force std
    fitted = load(files["llpr"])
    info = fitted.metadata["extra"]["llpr"]
    model = str(export(LastLayerUncertainty(single_model("cu-emt", 0), fitted.module.precision, info["energy_scale"],
                                            info["force_scale"], True, 0.25),
                       tmp_path / "llpr-w.pt", extra=fitted.metadata["extra"]))
    atoms = cu_frames(1, 9, amplitude=0.1, repeat=3)[0]
    atoms.calc = MLPotCalculator(model)
    ase_std = atoms.calc.get_property("forces_std", atoms)
    ase_estd = atoms.calc.get_property("energies_std", atoms)
    write_data(tmp_path / "system.data", atoms, ("Cu",))
    deck = (f"units metal\natom_style atomic\nboundary p p p\natom_modify map array\nplugin load {plugin}\n"
            f"read_data system.data\npair_style mlpot {model}\npair_coeff * * Cu\n"
            "compute u all mlpot/atom\ndump d all custom 1 dump.atoms id c_u[1] c_u[2]\n"
            "dump_modify d format float %.17g\nrun 0\n")
    for nprocs in (1, 2):
        run_lmp(deck, tmp_path, nprocs, timeout=300)
        d = read_dump(tmp_path / "dump.atoms")
        np.testing.assert_allclose(d["c_u[1]"], ase_std, rtol=1e-9)
        np.testing.assert_allclose(d["c_u[2]"], ase_estd, rtol=1e-9)

    system = empty_system(atoms)
    system.addForce(create_force(model, topology_of(atoms)))
    sim = app.Simulation(topology_of(atoms), system, openmm.VerletIntegrator(0.0),
                         openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(atoms.positions * units.NM_PER_ANGSTROM)
    rep = UncertaintyReporter(model, tmp_path / "u.txt", 1)
    sim.reporters.append(rep)
    sim.step(1)  # zero time step: the reported positions are the ASE ones
    rep.close()
    np.testing.assert_allclose(read_uncertainty(tmp_path / "u.npy")["forces_std"][-1], ase_std, rtol=1e-9)
