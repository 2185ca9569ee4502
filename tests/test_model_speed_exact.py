"""Speed changes that must not change a number (issue 12, model speed): the spline radial basis evaluated only
on the 4 splines each distance touches equals the dense evaluation of every spline, in a whole committee's
energies, forces, virial and uncertainty (fp64, 1e-12), for the cu-emt weights and a fresh model."""
import numpy as np
import pytest
import torch
from ase.build import bulk

from mlpot_plugins import load, pretrained_path
from mlpot_plugins.models.equivariant import EquivariantPotential
from mlpot_plugins.models.radial import CubicBSplineBasis


class DenseSplineBasis(CubicBSplineBasis):
    def forward(self, r):
        return self.dense(r)


def cu_emt_model():
    old = load(pretrained_path("cu-emt"))
    model = EquivariantPotential(**dict(old.metadata["extra"]["hparams"], dtype="float64"),
                                 species=old.metadata["species"])
    model.load_state_dict(old.module.state_dict(), strict=True)
    return model


def outputs(model, atoms):
    from mlpot_plugins.neighbors import neighbor_list

    edge_index, shifts = neighbor_list(atoms.positions, atoms.cell.array, atoms.pbc, model.cutoff)
    out = model.compute(torch.as_tensor(atoms.positions), torch.zeros(len(atoms), dtype=torch.int64),
                        torch.as_tensor(edge_index), torch.as_tensor(shifts), len(atoms), True, True)
    return {k: v.detach() for k, v in out.items()}


@pytest.mark.parametrize("make", [cu_emt_model, lambda: EquivariantPotential(
    species=["Cu"], cutoff=3.2, channels=4, n_basis=6, ensemble_size=3, seed=2)], ids=["cu-emt", "fresh"])
def test_sparse_spline_basis_equals_dense(make):
    model = make()
    assert isinstance(model.basis, CubicBSplineBasis)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.positions += np.random.default_rng(0).normal(0, 0.1, atoms.positions.shape)
    atoms.positions[1] = atoms.positions[0] + [model.basis.h * 2, 0, 0]  # a distance exactly on a knot
    sparse = outputs(model, atoms)
    model.basis.__class__ = DenseSplineBasis
    dense = outputs(model, atoms)
    assert set(sparse) == set(dense) and {"forces", "virial", "forces_std"} <= set(sparse)
    for key in sparse:
        scale = max(dense[key].abs().max().item(), 1e-30)
        assert (sparse[key] - dense[key]).abs().max().item() <= 1e-12 * scale, key
    assert torch.equal(sparse["energy"], dense["energy"])  # the forward pass is the same numbers
