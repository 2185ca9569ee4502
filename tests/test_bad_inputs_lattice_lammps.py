"""Bad lattice decks for pair_style mlpot (issue 13 conventions): each case is a real `lmp` run that must end
with an ERROR: line naming the problem and the fix, a non-zero exit and no crash (no signal, no terminate,
no raw torch or JSON-library text) -- never a silently wrong force."""
from typing import Dict

import numpy as np
import pytest
import torch

import mlpot_plugins
from lammps_util import lattice_sites, plugin, run_lmp, write_lattice_data  # noqa: F401
from mlpot_plugins.pretrained.reexport_holstein import eager_model

L = 12


class LegacyLattice(torch.nn.Module):
    """A lattice model as files were exported before compute_lattice_block existed."""

    def __init__(self):
        super().__init__()
        self.species = ["Q"]
        self.cutoff = 1.0
        self.k0 = torch.nn.Parameter(torch.ones((), dtype=torch.float64))

    @torch.jit.export
    def compute_lattice(self, Q: torch.Tensor, need_uncertainty: bool) -> Dict[str, torch.Tensor]:
        return {"forces": -self.k0 * Q}


def sites(edit=None, box=(L, L)):
    xyz = lattice_sites(np.random.default_rng(0).normal(size=(L, L)) * 0.5)
    return (edit(xyz) if edit else xyz), box


def moved(k, dx):
    def edit(xyz):
        xyz[k, 0] += dx
        return xyz
    return edit


def doubled(xyz):
    xyz[7, :2] = xyz[6, :2]  # atom 8 onto atom 7's site: 144 atoms, one site doubled and one missing
    return xyz


def non_square():
    xyz = lattice_sites(np.zeros((L, L)))
    return xyz[xyz[:, 1] < 10], (L, 10)


# id: (sites, model, pair_style options, deck pieces, ranks, expected words in the ERROR line)
CASES = {
    "box not L*a wide": (sites(box=(12.5, L)), "holstein-d4", "", {}, 1,
                         ["12.5 wide in x", "not a whole number of lattice spacings", "L*a wide"]),
    "site off the lattice": (sites(moved(5, 0.01)), "holstein-d4", "", {}, 1,
                             ["atom 6", "off the lattice", "x = xlo + i*a"]),
    "missing site": (sites(lambda xyz: xyz[:-1]), "holstein-d4", "", {}, 1,
                     ["144 sites but there are 143 atoms", "one atom per site"]),
    "extra atom": (sites(lambda xyz: np.vstack([xyz, [[0.5, 0.5, 0.0]]])), "holstein-d4", "", {}, 1,
                   ["144 sites but there are 145 atoms"]),
    "doubled site": (sites(doubled), "holstein-d4", "", {}, 1, ["atoms 7 and 8", "same lattice site", "doubled"]),
    "doubled site on 2 ranks": (sites(doubled), "holstein-d4", "", {}, 2, ["same lattice site", "doubled"]),
    "non-square lattice": (non_square(), "holstein-d4", "", {}, 1, ["square L x L lattice", "12 x 10 sites"]),
    "units metal": (sites(), "holstein-d4", "", {"units": "metal"}, 1, ["needs units lj", "not units metal"]),
    "pair_coeff other species": (sites(), "holstein-d4", "", {"coeff": "Cu"}, 1,
                                 ["element Cu", "species are: Q"]),
    "atomistic model, lattice deck": (sites(), "morse-cuau", "", {"coeff": "Cu"}, 1,
                                      ["units lj", "atomistic model", "metal, real"]),
    "z split among ranks": (sites(), "holstein-d4", "", {"processors": ""}, 2, ["split z", "processors * * 1"]),
    "z periodic": (sites(), "holstein-d4", "", {"boundary": "p p p"}, 1, ["boundary p p f", "not periodic in z"]),
    "x not periodic": (sites(), "holstein-d4", "", {"boundary": "f p f"}, 1, ["boundary p p f"]),
    "triclinic box": (sites(), "holstein-d4", "", {"before_pair": "change_box all triclinic"}, 1, ["orthogonal box"]),
    "NULL atom type": (sites(), "holstein-d4", "", {"read": "extra/atom/types 1", "coeff": "Q NULL",
                                                     "before_pair": "mass 2 1.0"}, 1,
                       ["atom type 2 is NULL", "map every type to Q"]),
    "per-site energies": (sites(), "holstein-d4-energy", "", {"after": "compute pa all pe/atom\n"
                                                               "dump e all custom 1 e.dump id c_pa"}, 1,
                          ["no per-site energies", "compute pe/atom"]),
    "thermostat moves x/y": (sites(), "holstein-d4", "", {"after": "fix lv all langevin 0.1 0.1 25 1\nfix nve all nve",
                                                          "steps": 5}, 1,
                             ["off the lattice", "fix setforce 0.0 0.0 NULL"]),
    "old file without block method": (sites(), "legacy", "", {}, 1,
                                      ["no compute_lattice_block() method", "reexport_holstein"]),
    "fallback without solver": (sites(), "no-solver", "fallback 0.1", {}, 1,
                                ["carries no exact local solver", "mlpot holstein export", "--fallback-radius"]),
    "fallback 0": (sites(), "holstein-d4", "fallback 0", {}, 1, ["THRESHOLD must be a force std > 0", "got 0"]),
    "fallback -1": (sites(), "holstein-d4", "fallback -1", {}, 1, ["THRESHOLD must be a force std > 0"]),
    "fallback nan": (sites(), "holstein-d4", "fallback nan", {}, 1, ["nan"]),
    "fallback no value": (sites(), "holstein-d4", "fallback", {}, 1, ["expected a threshold"]),
    "fallback until no step": (sites(), "holstein-d4", "fallback 0.07 until", {}, 1, ["until", "expected a timestep"]),
    "fallback until -1": (sites(), "holstein-d4", "fallback 0.07 until -1", {}, 1, ["STEP >= 0", "got -1"]),
    "until without fallback": (sites(), "holstein-d4", "until 100", {}, 1, ["after 'fallback THRESHOLD'"]),
    "edges device": (sites(), "holstein-d4", "edges device", {}, 1, ["lattice model", "has no edges",
                                                                     "drop 'edges device'"]),
}


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    """Files without a method pair_style mlpot needs: no block method (old export), no exact solver."""
    d = tmp_path_factory.mktemp("legacy")
    old = mlpot_plugins.load("holstein-d4")
    return {"legacy": mlpot_plugins.export(LegacyLattice(), d / "old.pt", kind="lattice"),
            "no-solver": mlpot_plugins.export(eager_model(old), d / "no-solver.pt", kind="lattice",
                                              name=old.metadata["name"], extra=old.metadata["extra"])}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_lattice_deck_gives_lammps_error(tmp_path, plugin, legacy, case):
    (xyz, box), model, options, pieces, ranks, words = CASES[case]
    write_lattice_data(tmp_path / "lat.data", xyz, (*box, 20.0))
    model = legacy.get(model, model)
    deck = f"""units {pieces.get('units', 'lj')}
{pieces.get('processors', 'processors * * 1')}
atom_style atomic
atom_modify map array
boundary {pieces.get('boundary', 'p p f')}
plugin load {plugin}
read_data lat.data {pieces.get('read', '')}
{pieces.get('before_pair', '')}
pair_style mlpot {model} {options}
pair_coeff * * {pieces.get('coeff', 'Q')}
{pieces.get('after', '')}
run {pieces.get('steps', 0)}
"""
    res = run_lmp(deck, tmp_path, nprocs=ranks, check=False, timeout=60)
    out = res.stdout + res.stderr
    errors = [line for line in out.splitlines() if line.startswith("ERROR")]
    assert res.returncode > 0, f"exit {res.returncode}:\n{out[-2000:]}"
    assert errors, f"no ERROR line:\n{out[-3000:]}"
    for bad in ("terminate called", "Segmentation", "signal", "nlohmann", "json.exception", "Traceback",
                "Exception raised from"):
        assert bad not in out, f"{bad!r} in the output:\n{out[-3000:]}"
    for word in words:
        assert word in errors[0], f"{word!r} not in {errors[0]!r}"
