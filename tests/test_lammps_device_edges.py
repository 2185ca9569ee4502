"""pair_style mlpot ... edges device (the default with device cuda): the pairs of each neighbour-list build go to
where the model runs once, and every step only the positions are copied there; the cutoff filter, the model
positions and the image shifts are computed there. On the CPU (where this test runs) it must give the numbers of
`edges host`: the same edges in the same order, so hot MD with re-neighbouring follows the same trajectory --
with folded images on one rank, layer by layer with ghost rows, the wide ghost shell, a NULL atom type, a float32
conversion, a triclinic cell, and on 2 ranks."""
import numpy as np
import pytest
from ase.build import bulk

from lammps_util import lammps_cell, lmp_factory, plugin, read_dump, results, run_lmp, write_data  # noqa: F401
from mlpot_plugins import pretrained_path

CU_EMT = str(pretrained_path("cu-emt"))
MORSE = str(pretrained_path("morse-cuau-committee"))
STEPS = 24


def hot_cell(kind):
    if kind == "triclinic":
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((3, 3, 2))
        atoms.set_cell(lammps_cell(10.8, 10.9, 7.3, 88.0, 93.0, 84.0), scale_atoms=True)
    else:
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((3, 3, 3))
    atoms.rattle(0.1, rng=np.random.default_rng(3))
    atoms.wrap()
    return atoms


CASES = {  # model, style options, elements of types 1..3 (None: one type), cell
    "folded": (CU_EMT, "", None, "cubic"),
    "folded triclinic": (CU_EMT, "", None, "triclinic"),
    "layer by layer with ghost rows": (CU_EMT, "images ghosts", None, "cubic"),
    "wide ghost shell": (CU_EMT, "layerwise no images ghosts", None, "cubic"),
    "float32": (CU_EMT, "dtype float32", None, "cubic"),
    "NULL type": (MORSE, "", ("Cu", "Au", "NULL"), "cubic"),
}


# atoms 1 and 2 trade places: the same atom counts and geometry, other atoms at the old indices
SWAP = """variable sx equal $(x[1]:%.17g)
variable sy equal $(y[1]:%.17g)
variable sz equal $(z[1]:%.17g)
set atom 1 x $(x[2]:%.17g) y $(y[2]:%.17g) z $(z[2]:%.17g)
set atom 2 x ${sx} y ${sy} z ${sz}"""


def md(lmp, data, model, options, elements):
    style, coeffs = f"mlpot {model} {options}", ["* * " + (" ".join(elements) if elements else "Cu")]
    if elements and "NULL" in elements:  # a type the model does not see: another pair style covers it
        style, coeffs = f"hybrid/overlay {style} zero 6.0", [coeffs[0].replace("* *", "* * mlpot"), "* * zero"]
    cmds = ["units metal", "atom_style atomic", "atom_modify map array", f"read_data {data}", "mass * 63.546"]
    if elements:
        cmds += ["set type 1 type/fraction 2 0.3 7", "set type 1 type/fraction 3 0.2 8"]
    cmds += [f"pair_style {style}", *[f"pair_coeff {c}" for c in coeffs],
             "neighbor 0.3 bin", "neigh_modify every 1 delay 0 check yes",
             "velocity all create 3000 5 mom yes", "fix 1 all nve", "timestep 0.002",
             "compute u all mlpot/atom", "compute umax all reduce max c_u[1]",
             "thermo_style custom step pe press c_umax", f"run {STEPS}",
             # between runs LAMMPS starts counting list builds again and may move, sort and exchange the atoms:
             # a new run must not reuse the last run's candidates (a run without re-neighbouring, then moved
             # atoms with the same number of builds as the run before)
             "neigh_modify every 1000 delay 0 check no", "run 3",
             *SWAP.splitlines(), "run 0",
             # (displace_atoms random seeds from each position: 1e-14 apart would give other displacements)
             "displace_atoms all ramp x -0.2 0.2 z 0.0 7.0 units box",
             "displace_atoms all move 0.7 0.3 -0.4 units box", "run 0", "run 3"]
    energies = []  # after every run: a run 0 moves no atom, so only its energy shows what it computed
    for c in cmds:
        lmp.command(c)
        if c.startswith("run"):
            energies.append(lmp.get_thermo("pe"))
    n = lmp.get_natoms()
    get = lambda name: np.ctypeslib.as_array(lmp.gather_atoms(name, 1, 3)).reshape(n, 3).copy()  # noqa: E731
    return {"pe": lmp.get_thermo("pe"), "energies": np.array(energies), "press": lmp.get_thermo("press"), "umax": lmp.extract_compute("umax", 0, 0),
            "x": get("x"), "f": get("f"), "device": lmp.extract_pair("edges_device"),
            "builds": lmp.extract_pair("candidate_builds"), "rows": lmp.extract_pair("model_rows")}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_device_edges_follow_the_host_trajectory(tmp_path, lmp_factory, case):
    model, options, elements, cell = CASES[case]
    write_data(tmp_path / "system.data", hot_cell(cell), elements=("Cu", "Au", "Ag") if elements else ("Cu",))
    out = {}
    for edges in ("host", "device"):
        lmp = lmp_factory()
        try:
            out[edges] = md(lmp, tmp_path / "system.data", model, f"{options} edges {edges}", elements)
        finally:
            lmp.close()
    host, dev = out["host"], out["device"]
    assert (host["device"], dev["device"]) == (0.0, 1.0) and host["builds"] == 0.0
    # the candidates are rebuilt with the neighbour list (3000 K, skin 0.3 A: several times), not every step
    assert 4 <= dev["builds"] <= STEPS / 2 + 3, dev["builds"]
    assert np.abs(host["f"]).max() > 0.5 and host["umax"] > 0.0  # hot: real forces and uncertainty
    assert dev["rows"] >= host["rows"]  # ghosts ending any candidate pair are rows (no edge: no effect)
    scale = np.abs(host["f"]).max()
    np.testing.assert_allclose(dev["x"], host["x"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(dev["f"], host["f"], rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(dev["energies"], host["energies"], rtol=1e-12, atol=1e-9)
    assert dev["press"] == pytest.approx(host["press"], rel=1e-9, abs=1e-6)
    assert dev["umax"] == pytest.approx(host["umax"], rel=1e-9)


MD2 = """units metal
atom_style atomic
atom_modify map array
processors 2 1 1
plugin load {plugin}
read_data system.data
pair_style mlpot {model} {options}
pair_coeff * * Cu
neighbor 0.3 bin
neigh_modify every 1 delay 0 check yes
velocity all create 3000 5 mom yes
fix 1 all nve
timestep 0.002
thermo_style custom step pe press
run 16
neigh_modify every 1000 delay 0 check no
run 2
{swap}
run 0
print "RESULT swapped $(pe:%.17g)"
displace_atoms all ramp x -0.2 0.2 z 0.0 7.0 units box
displace_atoms all move 0.7 0.3 -0.4 units box
run 0
run 2
dump d all custom 1 dump.atoms id x y z fx fy fz
dump_modify d format float %.17g sort id
run 0
print "RESULT pe $(pe:%.17g) pxy $(pxy:%.17g)"
"""


@pytest.mark.parametrize("options", ["", "layerwise no"])
def test_device_edges_on_two_ranks(tmp_path, plugin, options):
    """2 ranks (atoms cross between them, ghost lists change): layer by layer with merged images, and the wide
    ghost shell with ghost centres; device and host edges give the same trajectory."""
    out = {}
    for edges in ("host", "device"):
        work = tmp_path / edges
        work.mkdir()
        write_data(work / "system.data", hot_cell("cubic"), elements=("Cu",))
        res = run_lmp(MD2.format(plugin=plugin, model=CU_EMT, options=f"{options} edges {edges}", swap=SWAP), work, 2,
                      timeout=300)
        out[edges] = (results(res.stdout), read_dump(work / "dump.atoms"))
    (rh, dh), (rd, dd) = out["host"], out["device"]
    assert rd["pe"] == pytest.approx(rh["pe"], rel=1e-12) and rd["pxy"] == pytest.approx(rh["pxy"], rel=1e-8)
    assert rd["swapped"] == pytest.approx(rh["swapped"], rel=1e-12)
    for key in ("x", "y", "z"):
        np.testing.assert_allclose(dd[key], dh[key], rtol=0, atol=1e-10)
    fh, fd = (np.stack([d["fx"], d["fy"], d["fz"]], 1) for d in (dh, dd))
    assert np.abs(fh).max() > 0.5
    np.testing.assert_allclose(fd, fh, rtol=0, atol=1e-9 * np.abs(fh).max())
