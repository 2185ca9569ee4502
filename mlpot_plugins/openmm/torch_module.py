"""The TorchScript module a TorchForce runs: OpenMM units and atoms in, the model's ``compute`` inside.

It only translates (nm -> A, subset selection, vesin neighbour list, eV -> kJ/mol); energy and forces
come from the exported model's ``compute`` in one pass, so TorchForce is told the module outputs
forces and no second autograd pass is made.
"""
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn
from vesin.torch import NeighborList

from .. import units
from ..neighbors import check_distances, check_geometry

OPENMM_DEFAULT_BOX_NM = 2.0  # openmm.System's default box: a cube of 2 nm, used when none was set


def check_box(box_nm: Tensor, box_known_default: bool, default_nm: float = OPENMM_DEFAULT_BOX_NM) -> None:
    """Refuse OpenMM's default 2 nm cube in a periodic force unless the topology's box was that cube:
    it means the System's box was never set (shared by both backends and the uncertainty reporter)."""
    if not box_known_default and bool(torch.equal(
            box_nm, default_nm * torch.eye(3, dtype=box_nm.dtype, device=box_nm.device))):
        raise ValueError("mlpot: the force is periodic but the System's box is OpenMM's default 2 nm "
                         "cube, i.e. no box was set; call system.setDefaultPeriodicBoxVectors(...) "
                         "(or context.setPeriodicBoxVectors) with the real box, or use periodic=False "
                         "(a box that really is a 2 nm cube: pass a Topology with that box)")


class OpenMMModelWrapper(nn.Module):
    """``forward(positions_nm[, box_nm]) -> (energy kJ/mol, forces kJ/mol/nm)`` for openmm-torch.

    ``model`` is a loaded exported model (TorchScript), ``types`` its species index for each ML atom,
    ``atoms`` the system indices of the ML atoms (None: every particle, in order).
    """

    def __init__(self, model: torch.jit.ScriptModule, types: Tensor, atoms: Optional[Tensor],
                 cutoff: float, periodic: bool, dtype: torch.dtype, box_known_default: bool = False):
        super().__init__()
        self.model = model
        self.register_buffer("types", types.to(torch.int64))
        self.use_subset: bool = atoms is not None
        self.register_buffer("atoms", (atoms if atoms is not None else torch.zeros(0)).to(torch.int64))
        # particles the System must have at least (subset) or exactly (whole system)
        self.n_required: int = int(self.atoms.max()) + 1 if atoms is not None and atoms.numel() else 0
        self.cutoff: float = float(cutoff)
        self.periodic: bool = bool(periodic)
        # True only when the topology's own box is OpenMM's default 2 nm cube; otherwise a 2 nm cube
        # at run time means the System's box was never set
        self.box_known_default: bool = bool(box_known_default)
        self.dtype: torch.dtype = dtype
        self.length_to_model: float = units.OPENMM_LENGTH_TO_MODEL
        self.energy_from_model: float = units.OPENMM_ENERGY_FROM_MODEL
        self.force_from_model: float = units.OPENMM_FORCE_FROM_MODEL

    def forward(self, positions: Tensor, boxvectors: Optional[Tensor] = None,
                need_uncertainty: bool = False) -> Tuple[Tensor, Tensor, Dict[str, Tensor]]:
        """(energy, forces, stats); with ``need_uncertainty`` (python backend) ``stats`` holds the committee's
        ``forces_std`` [n_ml] (eV/A), ``energies_std`` [n_ml] (eV) and ``energy_std`` (eV) from this same
        model call (openmm-torch reads the first two). Kept one flat method: splitting it into helper methods
        made openmm-torch 1.5 segfault on the second of two Contexts whose evaluation raises
        (tests/test_bad_inputs_openmm.py::test_bad_geometry_in_a_context)."""
        stats: Dict[str, Tensor] = {}
        out_dtype = positions.dtype
        n_sys = positions.shape[0]
        if not self.use_subset and n_sys != self.types.shape[0]:
            raise RuntimeError("mlpot: the force was created for " + str(self.types.shape[0]) + " particles but "
                               "the System has " + str(n_sys) + "; pass the System's Topology (or one element "
                               "per particle) to create_force, or atoms=[...] for a subset")
        if self.use_subset and n_sys < self.n_required:
            raise RuntimeError("mlpot: the ML region refers to particle " + str(self.n_required - 1)
                               + " but the System has only " + str(n_sys) + " particles")
        x = positions.detach().to(self.dtype) * self.length_to_model
        if self.use_subset:
            x = x.index_select(0, self.atoms)
        if x.shape[0] == 0:  # empty ML region (e.g. a mixed system being set up): no contribution
            return (torch.zeros((), dtype=out_dtype, device=positions.device),
                    torch.zeros_like(positions), stats)
        if self.periodic:
            if boxvectors is None:
                raise RuntimeError("mlpot: the force uses periodic boundaries but OpenMM passed no box")
            check_box(boxvectors.detach(), self.box_known_default)
            box = boxvectors.detach().to(self.dtype) * self.length_to_model
        else:
            box = torch.zeros((3, 3), dtype=self.dtype, device=x.device)
        check_geometry(x, box, [self.periodic, self.periodic, self.periodic])
        nl = NeighborList(cutoff=self.cutoff, full_list=True)
        ij_s: List[Tensor] = nl.compute(x, box, self.periodic, "ijSd")
        check_distances(ij_s[0], ij_s[1], ij_s[3])
        edge_index = torch.stack([ij_s[0], ij_s[1]]).to(torch.int64)
        shifts = ij_s[2].to(self.dtype) @ box
        out = self.model.compute(x, self.types, edge_index, shifts, x.shape[0], False, need_uncertainty)
        # detach: some exported models return an energy still attached to their internal graph
        energy = out["energy"].detach() * self.energy_from_model
        forces = out["forces"].detach() * self.force_from_model
        if need_uncertainty:
            for key in ["forces_std", "energies_std", "energy_std"]:
                if key in out:
                    stats[key] = out[key].detach()
        if self.use_subset:
            full = torch.zeros((positions.shape[0], 3), dtype=forces.dtype, device=forces.device)
            forces = full.index_copy(0, self.atoms, forces)
        return energy.to(out_dtype), forces.to(out_dtype), stats
