"""E(3)-equivariant message-passing potential (NequIP/MACE class) with batched committees.

Per layer: e3nn real spherical harmonics Y_l(r_hat) up to ``lmax`` on every edge, channel-wise tensor
products (e3nn Wigner-3j couplings) of neighbour features with Y_l weighted by learned radial functions
(radial MLP on a Bessel basis, or Facet-style cubic B-splines), neighbour sum, linear + self-connection,
gate or sphere-grid (Facet) nonlinearity. Per-atom energy = species shift + species scale x readout MLP.

Uncertainty:
* ``ensemble="committee"``: K independently initialised members; every weight has a leading member axis
  and all members run in the same batched kernels (one forward, one backward for all K).
* ``ensemble="shallow"``: one shared trunk (weights with member axis 1, broadcast) and K readout heads.
  Fewer parameters and one trunk to train; at run time each member still needs its own forces, so
  the trunk is evaluated on K copies of the edge vectors (see docs/equivariant.md).

``EquivariantPotential(**hparams)`` is rebuilt from the plain-dict ``hparams`` stored in checkpoints.
"""
from typing import Any, Dict, List

import torch
from e3nn import o3
from torch import Tensor, nn

from .base import AtomisticPotential
from .equivariant_blocks import Interaction, member_weight
from .radial import BesselBasis, CubicBSplineBasis

DEFAULTS: Dict[str, Any] = dict(
    species=["Cu"], cutoff=4.5, lmax=2, n_layers=2, channels=8, radial="spline", n_basis=8,
    radial_hidden=16, nonlinearity="gate", grid_resolution=10, readout_hidden=8, avg_num_neighbors=12.0,
    ensemble_size=1, ensemble="committee", seed=0, dtype="float64", uncertainty_scale=1.0,
)


class EquivariantPotential(AtomisticPotential):
    """See the module docstring; all arguments are in ``DEFAULTS``."""

    def __init__(self, **hparams: Any):
        unknown = sorted(set(hparams) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"unknown EquivariantPotential option(s) {unknown}; valid: {sorted(DEFAULTS)}")
        hp = dict(DEFAULTS)
        hp.update(hparams)
        super().__init__(list(hp["species"]), float(hp["cutoff"]), int(hp["ensemble_size"]),
                         float(hp["uncertainty_scale"]))
        if hp["lmax"] < 1 or hp["n_layers"] < 1:
            raise ValueError(f"need lmax >= 1 and n_layers >= 1, got lmax={hp['lmax']} n_layers={hp['n_layers']}")
        if hp["ensemble"] not in ("committee", "shallow"):
            raise ValueError(f"ensemble must be 'committee' or 'shallow', got {hp['ensemble']!r}")
        dtype = getattr(torch, hp["dtype"])
        self.n_layers: int = int(hp["n_layers"])
        self.lmax: int = int(hp["lmax"])
        k = self.ensemble_size
        kw = k if hp["ensemble"] == "committee" else 1
        c = int(hp["channels"])
        gen = torch.Generator().manual_seed(int(hp["seed"]))
        self.sh = o3.SphericalHarmonics(list(range(self.lmax + 1)), normalize=True, normalization="component")
        if hp["radial"] == "spline":
            self.basis = CubicBSplineBasis(self.cutoff, int(hp["n_basis"]), dtype)
        else:
            self.basis = BesselBasis(self.cutoff, int(hp["n_basis"]), dtype)
        self.embedding = member_weight(kw, [self.n_species, c], 1, gen, dtype)
        layers = []
        ls_all = list(range(self.lmax + 1))
        for t in range(self.n_layers):
            last = t == self.n_layers - 1
            layers.append(Interaction(
                kw, [0] if t == 0 else ls_all, [0] if last else ls_all, self.lmax, c, self.n_species,
                hp["radial"], int(hp["n_basis"]), int(hp["radial_hidden"]), hp["nonlinearity"],
                int(hp["grid_resolution"]), float(hp["avg_num_neighbors"]), last, gen, dtype))
        self.layers = nn.ModuleList(layers)
        hr = int(hp["readout_hidden"])
        self.readout1 = member_weight(k, [c, hr], c, gen, dtype)
        self.readout2 = member_weight(k, [hr, 1], hr, gen, dtype)
        self.register_buffer("atom_shift", torch.zeros(self.n_species, dtype=dtype))
        self.register_buffer("atom_scale", torch.ones(self.n_species, dtype=dtype))
        # a shallow ensemble's trunk is shared: one copy of the geometry serves every head
        self.members_share_geometry = hp["ensemble"] == "shallow"
        # layer-wise contract (contract.py, "Message passing layer by layer"): layers, and the widest per-atom
        # feature row an engine exchanges (a layer's input, all K copies)
        self.mp_layers: int = self.n_layers
        self.n_sh: int = (self.lmax + 1) ** 2
        self.channels: int = c
        self.mp_feature_dim: int = k * c * max(sum(2 * l + 1 for l in layer.ls_in) for layer in layers)

    def interaction_range(self) -> float:
        return self.n_layers * self.cutoff

    def member_atom_energies(self, edge_vectors: Tensor, edge_index: Tensor, types: Tensor) -> Tensor:
        return self.readout(self.trunk(edge_vectors, edge_index, types), types)

    def trunk(self, edge_vectors: Tensor, edge_index: Tensor, types: Tensor) -> Tensor:
        """[K, E, 3] edge vectors -> scalar features of the last layer [K, N, C] (the readout's input)."""
        k = edge_vectors.shape[0]
        centre, neighbour = edge_index[0], edge_index[1]
        sh, basis = self.geometry(edge_vectors)
        h0 = self.embedding.index_select(1, types).expand(k, -1, -1)  # [K, N, C]
        feats: List[Tensor] = [h0.unsqueeze(-1)]
        for layer in self.layers:
            feats = layer(feats, sh, basis, centre, neighbour, types, types.shape[0])
        return feats[0].squeeze(-1)

    def geometry(self, edge_vectors: Tensor) -> List[Tensor]:
        """[K, E, 3] -> spherical harmonics [K, E, (lmax+1)^2] and radial basis [K, E, n_basis] (envelope in)."""
        r = torch.linalg.norm(edge_vectors, dim=-1)  # [K, E]
        return [self.sh(edge_vectors), self.basis(r)]

    def readout(self, scalars: Tensor, types: Tensor) -> Tensor:
        """Scalar features [K, N, C] (or [1, N, C] from a shared trunk) -> per-atom member energies [K, N]."""
        return self.readout_energy(self.readout_features(scalars), types)

    def readout_features(self, scalars: Tensor) -> Tensor:
        """Scalar features [K, N, C] (or [1, N, C]) -> the last linear layer's input features [K, N, H]."""
        scalars = scalars.expand(self.readout1.shape[0], -1, -1)
        return torch.nn.functional.silu(torch.bmm(scalars, self.readout1))

    def readout_energy(self, hidden: Tensor, types: Tensor) -> Tensor:
        """Last-layer features [K, N, H] -> per-atom member energies [K, N] (linear in the features)."""
        out = torch.bmm(hidden, self.readout2).squeeze(-1)  # [K, N]
        return self.atom_shift.index_select(0, types) + self.atom_scale.index_select(0, types) * out

    # ---- the layer-wise contract: features [N, F] per atom, all copies of degree l side by side ----
    @torch.jit.export
    def mp_copies(self, need_uncertainty: bool) -> int:
        """Copies of the geometry (and of the features) a call needs: K, or 1 for a shallow ensemble's mean."""
        return self.copies_for(need_uncertainty, False)

    @torch.jit.export
    def mp_edges(self, edge_vectors: Tensor) -> List[Tensor]:
        """[copies, E, 3] -> per-edge geometry, computed once and used by every layer: spherical harmonics
        [copies, E, (lmax+1)^2] and radial basis [copies, E, n_basis], two separate contiguous tensors (one
        concatenated tensor would cost a copy of it per layer and its gradient's concatenation per layer)."""
        return self.geometry(edge_vectors)

    @torch.jit.export
    def mp_embed(self, types: Tensor, copies: int) -> Tensor:
        """[N] -> input features of layer 0 [N, copies * C] (depends on the species only)."""
        h0 = self.embedding.index_select(1, types).expand(copies, -1, -1)  # [copies, N, C]
        return h0.permute(1, 0, 2).reshape(types.shape[0], copies * self.channels)

    @torch.jit.export
    def mp_layer(self, layer: int, h: Tensor, edge_attr: List[Tensor], edge_index: Tensor, types: Tensor,
                 n_local: int) -> Tensor:
        """Layer ``layer``: features of all rows h [N, F_t] -> features of rows < n_local [n_local, F_t+1];
        ``edge_attr`` is what ``mp_edges`` returned; every edge's centre must be below n_local."""
        n = h.shape[0]
        if layer < 0 or layer >= self.n_layers:
            raise ValueError("mp_layer: layer " + str(layer) + " does not exist (the model has "
                             + str(self.n_layers) + ", numbered from 0)")
        if len(edge_attr) != 2:
            raise ValueError("mp_layer: edge_attr must be the 2 tensors mp_edges returned (harmonics, radial "
                             "basis), got " + str(len(edge_attr)))
        sh, basis = edge_attr[0], edge_attr[1]
        copies = sh.shape[0]
        out = h[:0]
        for t, block in enumerate(self.layers):
            if t == layer:
                need = copies * block.channels * sum([2 * l + 1 for l in block.ls_in])
                if need != h.shape[1]:
                    raise ValueError("mp_layer(" + str(layer) + "): features have " + str(h.shape[1])
                                     + " columns, the layer needs " + str(need) + " (copies " + str(copies)
                                     + "); pass the features of the previous layer, exchanged for the ghosts")
                feats: List[Tensor] = []
                offset = 0
                for l in block.ls_in:  # [N, copies * C * (2l+1)] slices -> [copies, N, C, 2l+1]
                    width = copies * block.channels * (2 * l + 1)
                    feats.append(h[:, offset:offset + width].reshape(n, copies, block.channels, 2 * l + 1)
                                 .permute(1, 0, 2, 3))
                    offset += width
                new = block(feats, sh, basis, edge_index[0], edge_index[1], types, n_local)
                out = torch.cat([f.permute(1, 0, 2, 3).reshape(n_local, copies * block.channels * f.shape[-1])
                                 for f in new], dim=1)
        return out

    @torch.jit.export
    def mp_readout(self, h: Tensor, types: Tensor) -> Tensor:
        """Features of the last layer [n, copies * C] -> per-atom energies of every member [K, n]."""
        n = h.shape[0]
        copies = h.shape[1] // self.channels
        return self.readout(h.reshape(n, copies, self.channels).permute(1, 0, 2), types)

    @torch.jit.export
    def mp_outputs(self, edge_vectors: Tensor, edge_grad: Tensor, edge_index: Tensor, n: int, energies: Tensor,
                   need_virial: bool, need_uncertainty: bool) -> Dict[str, Tensor]:
        """``compute``'s outputs from the edge vectors [E, 3], the gradient [copies, E, 3] of the energy target
        (members' sum with K copies, mean with one) with respect to them, and ``energies`` [K, n_local]."""
        return self.edge_outputs(edge_vectors, edge_grad, edge_index, n, energies, need_virial, need_uncertainty,
                                 False)

    # ---- helpers used by training and tests (not exported) ----
    @torch.jit.unused
    def set_species_stats(self, shift: Tensor, scale: Tensor) -> None:
        self.atom_shift.copy_(torch.as_tensor(shift, dtype=self.atom_shift.dtype))
        self.atom_scale.copy_(torch.as_tensor(scale, dtype=self.atom_scale.dtype))

    @torch.jit.unused
    def make_members_identical(self) -> None:
        """Copy member 0's weights into every member (then the committee std must be zero)."""
        with torch.no_grad():
            for p in self.parameters():
                if p.shape[0] == self.ensemble_size and self.ensemble_size > 1:
                    p.copy_(p[:1].expand_as(p))


def build_model(hparams: Dict[str, Any]) -> EquivariantPotential:
    return EquivariantPotential(**hparams)
