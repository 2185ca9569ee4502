"""The layer-wise message-passing contract (contract.py, "Message passing layer by layer"): its Python reference
engine (mlpot_plugins.message_passing) splits periodic Cu into domains with ghosts ONE cutoff deep, exchanges
features forward and their gradients back, and must equal the model's own `compute` on the whole system."""
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk

from mlpot_plugins import load
from mlpot_plugins.message_passing import has_layerwise, layered_compute, split
from mlpot_plugins.models.equivariant import EquivariantPotential
from mlpot_plugins.neighbors import neighbor_list


def system(repeat=(3, 2, 2), seed=3):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(repeat)
    atoms.rattle(0.1, rng=np.random.default_rng(seed))
    atoms.set_cell(atoms.cell.array + np.array([[0, 0, 0], [0.4, 0, 0], [0.2, 0.3, 0]]), scale_atoms=True)
    return atoms


def full_and_layered(module, cutoff, atoms, n_domains, need_uncertainty=True):
    types = np.zeros(len(atoms), dtype=np.int64)
    ei, sh = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    ref = module.compute(torch.tensor(atoms.positions), torch.tensor(types), torch.tensor(ei), torch.tensor(sh),
                         len(atoms), True, need_uncertainty)
    frac = atoms.get_scaled_positions()[:, 0]
    domain = np.minimum((frac * n_domains).astype(int), n_domains - 1)
    domains = split(atoms.positions, atoms.cell.array, atoms.pbc, types, domain, cutoff)
    # one cutoff of ghosts: far fewer rows than the 2-cutoff shell the whole network would need
    assert all(len(d.atom) < 4 * d.n_local + 200 for d in domains)
    return ref, layered_compute(module, domains, len(atoms), True, need_uncertainty)


def assert_same(ref, out, tol=1e-10):
    assert set(out) == set(ref), (sorted(out), sorted(ref))
    for key in ref:
        scale = float(ref[key].abs().max())
        err = float((out[key] - ref[key]).abs().max())
        assert err <= tol * max(scale, 1e-3), (key, err, scale)


# cu-emt as exported before stop 26, when mp_edges returned one concatenated tensor: engines still accept it
V1_FILE = str(Path(__file__).parent / "data" / "cu-emt-layerwise-v1.pt")


@pytest.mark.parametrize("n_domains, path", [(1, "cu-emt"), (2, "cu-emt"), (3, "cu-emt"), (2, V1_FILE)])
def test_shipped_committee_layer_by_layer_equals_compute(n_domains, path):
    """cu-emt (K = 4, 2 layers, fp64): energy, forces, virials, member forces/energies/virials and the
    calibrated stds; with one domain every ghost is a periodic image of an owned atom. The shipped file's
    mp_edges returns its geometry as a list of tensors, the earlier file's as one tensor."""
    model = load(path)
    assert has_layerwise(model.module) and model.metadata["message_passing"] == {"layers": 2, "feature_dim": 432}
    probe = model.module.mp_edges(torch.zeros(4, 1, 3, dtype=torch.float64) + 1.0)
    assert isinstance(probe, list if path == "cu-emt" else torch.Tensor)
    ref, out = full_and_layered(model.module, model.cutoff, system(), n_domains)
    assert float(ref["forces_std"].min()) > 1e-4  # a committee that disagrees: the std is a real test
    assert_same(ref, out)


@pytest.mark.parametrize("need_uncertainty", [False, True])
def test_shallow_ensemble_one_copy_or_one_per_member(need_uncertainty):
    """A shallow ensemble runs one trunk copy for the mean (gradient of the mean) and K with uncertainty."""
    model = EquivariantPotential(species=["Cu"], cutoff=3.2, n_layers=3, channels=4, ensemble_size=3,
                                 ensemble="shallow", nonlinearity="s2grid", radial="mlp", seed=1)
    scripted = torch.jit.script(model)
    assert scripted.mp_copies(need_uncertainty) == (3 if need_uncertainty else 1)
    ref, out = full_and_layered(scripted, model.cutoff, system((2, 2, 2), seed=5), 2, need_uncertainty)
    assert_same(ref, out)
