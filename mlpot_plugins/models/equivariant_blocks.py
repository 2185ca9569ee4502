"""Building blocks of :class:`~mlpot_plugins.models.equivariant.EquivariantPotential`, batched over members.

Every weight carries a leading member axis of size ``kw`` (K for a full committee, 1 for a trunk shared by
a shallow ensemble); features carry a leading axis K. Equivariant features are kept per degree l as
``[K, N, C, 2l+1]`` tensors in e3nn's real spherical-harmonic basis with natural parity (0e, 1o, 2e),
so every linear map is a plain batched matmul over channels and every member runs in the same kernels.
"""
import math
from typing import List

import torch
from e3nn import o3
from torch import Tensor, nn


def member_weight(kw: int, shape: List[int], fan_in: int, gen: torch.Generator, dtype: torch.dtype,
                  gain: float = 1.0) -> nn.Parameter:
    """Independently drawn N(0, gain^2/fan_in) weights for each of the ``kw`` members."""
    w = torch.randn([kw] + list(shape), generator=gen, dtype=torch.float64) * (gain / math.sqrt(fan_in))
    return nn.Parameter(w.to(dtype))


def batched_linear(x: Tensor, w: Tensor) -> Tensor:
    """x [K, N, C, d], w [kw, C, C'] (kw in {1, K}) -> [K, N, C', d]; mixes channels, never m-components."""
    return torch.einsum("kncd,kce->kned", x, w.expand(x.shape[0], -1, -1))


class RadialMLP(nn.Module):
    """Per-member two-layer MLP on the radial basis -> one weight per (path, channel)."""

    def __init__(self, kw: int, n_basis: int, hidden: int, n_out: int, gen: torch.Generator, dtype: torch.dtype):
        super().__init__()
        self.w1 = member_weight(kw, [n_basis, hidden], n_basis, gen, dtype, gain=2.0)
        self.w2 = member_weight(kw, [hidden, n_out], hidden, gen, dtype)

    def forward(self, basis: Tensor) -> Tensor:
        k = basis.shape[0]
        hid = torch.nn.functional.silu(torch.bmm(basis, self.w1.expand(k, -1, -1)))
        return torch.bmm(hid, self.w2.expand(k, -1, -1))


class RadialSpline(nn.Module):
    """Learned spline coefficients: each (path, channel) radial function is sum_b c_b B_b(r)."""

    def __init__(self, kw: int, n_basis: int, n_out: int, gen: torch.Generator, dtype: torch.dtype):
        super().__init__()
        self.coeff = member_weight(kw, [n_basis, n_out], 2, gen, dtype)

    def forward(self, basis: Tensor) -> Tensor:
        return torch.bmm(basis, self.coeff.expand(basis.shape[0], -1, -1))


class GateActivation(nn.Module):
    """SiLU on scalars; each l > 0 channel is scaled by sigmoid of a learned scalar gate (exactly equivariant)."""

    def __init__(self, kw: int, ls: List[int], channels: int, gen: torch.Generator, dtype: torch.dtype):
        super().__init__()
        self.ls: List[int] = list(ls)
        self.w_gate = member_weight(kw, [len(ls), channels, channels], channels, gen, dtype)

    def forward(self, feats: List[Tensor]) -> List[Tensor]:
        scalars = feats[0]
        out: List[Tensor] = [torch.nn.functional.silu(scalars)]
        for i in range(1, len(self.ls)):
            gate = torch.sigmoid(batched_linear(scalars, self.w_gate[:, i]))
            out.append(feats[i] * gate)
        return out


class NoActivation(nn.Module):
    def forward(self, feats: List[Tensor]) -> List[Tensor]:
        return feats


class S2GridActivation(nn.Module):
    """Facet-style nonlinearity: project each channel's (l = 0..lmax) coefficients to a sphere grid,
    apply SiLU pointwise, project back with the grid's quadrature.

    The grid and weights come from e3nn's ``ToS2Grid``/``FromS2Grid``; the sampling matrix is rebuilt with
    ``o3.spherical_harmonics`` so it uses exactly the basis of the features. Equivariant only up to
    aliasing of the (not band-limited) SiLU output: finer grids shrink the error.
    """

    def __init__(self, lmax: int, resolution: int, dtype: torch.dtype):
        super().__init__()
        self.lmax = lmax
        res_beta, res_alpha = resolution, resolution + 1
        to_grid = o3.ToS2Grid(lmax, (res_beta, res_alpha), normalization="component", dtype=torch.float64)
        from_grid = o3.FromS2Grid((res_beta, res_alpha), lmax, normalization="component", dtype=torch.float64)
        n_grid = res_beta * res_alpha
        xyz = o3.angles_to_xyz(to_grid.alphas[None, :], to_grid.betas[:, None]).reshape(n_grid, 3)
        sample = o3.spherical_harmonics(list(range(lmax + 1)), xyz, True, normalization="component").T  # [D, G]
        quad = from_grid(torch.eye(n_grid, dtype=torch.float64).reshape(n_grid, res_beta, res_alpha))[:, 0]
        project = quad[:, None] * sample.T
        project = project / (sample @ project).diagonal().mean()  # so that project(sample(x)) = x
        self.register_buffer("sample", sample.to(dtype))
        self.register_buffer("project", project.to(dtype))

    def forward(self, feats: List[Tensor]) -> List[Tensor]:
        x = torch.cat(feats, dim=-1)  # [K, N, C, (lmax+1)^2]
        y = torch.nn.functional.silu(x @ self.sample) @ self.project
        out: List[Tensor] = []
        for l in range(self.lmax + 1):
            out.append(y[..., l * l:(l + 1) * (l + 1)])
        return out


def tensor_product_paths(ls_in: List[int], lmax_sh: int, ls_out: List[int]) -> List[List[int]]:
    """(l1, l2, l3) with |l1-l2| <= l3 <= l1+l2 and l1+l2+l3 even: natural-parity in, natural-parity out."""
    paths = []
    for l1 in ls_in:
        for l2 in range(lmax_sh + 1):
            for l3 in ls_out:
                if abs(l1 - l2) <= l3 <= l1 + l2 and (l1 + l2 + l3) % 2 == 0:
                    paths.append([l1, l2, l3])
    return paths


class Interaction(nn.Module):
    """One NequIP-style layer: linear up -> edge tensor product with Y(r_hat) weighted by learned radial
    functions -> sum over neighbours -> linear + self-connection + species bias -> nonlinearity."""

    def __init__(self, kw: int, ls_in: List[int], ls_out: List[int], lmax: int, channels: int, n_species: int,
                 radial: str, n_basis: int, radial_hidden: int, nonlinearity: str, grid_resolution: int,
                 avg_num_neighbors: float, last: bool, gen: torch.Generator, dtype: torch.dtype):
        super().__init__()
        c = channels
        self.ls_in: List[int] = list(ls_in)
        self.ls_out: List[int] = list(ls_out)
        paths = tensor_product_paths(ls_in, lmax, ls_out)
        self.p_in: List[int] = [ls_in.index(p[0]) for p in paths]
        self.p_sh: List[int] = [p[1] for p in paths]
        self.p_out: List[int] = [ls_out.index(p[2]) for p in paths]
        self.n_paths = len(paths)
        # the paths into each output degree, in path order (0 x l -> l exists for every l, so none is empty)
        self.paths_into: List[List[int]] = [[q for q in range(len(paths)) if self.p_out[q] == o]
                                            for o in range(len(ls_out))]
        self.lmax_sh: int = lmax
        self.self_index: List[int] = [ls_in.index(l) if l in ls_in else -1 for l in ls_out]
        self.dims_out: List[int] = [2 * l + 1 for l in ls_out]
        self.norm = 1.0 / math.sqrt(avg_num_neighbors)
        d = 2 * lmax + 1
        cg = torch.zeros(len(paths), d, d, d, dtype=torch.float64)
        for p, (l1, l2, l3) in enumerate(paths):
            n_into = sum(1 for q in paths if q[2] == l3)
            w3j = o3.wigner_3j(l1, l2, l3, dtype=torch.float64) * math.sqrt(2 * l3 + 1) / math.sqrt(n_into)
            cg[p, :2 * l1 + 1, :2 * l2 + 1, :2 * l3 + 1] = w3j
        self.register_buffer("cg", cg.to(dtype))
        self.dims_in: List[int] = [2 * l + 1 for l in ls_in]
        self.w_up = member_weight(kw, [len(ls_in), c, c], c, gen, dtype)
        if radial == "mlp":
            self.radial = RadialMLP(kw, n_basis, radial_hidden, self.n_paths * c, gen, dtype)
        elif radial == "spline":
            self.radial = RadialSpline(kw, n_basis, self.n_paths * c, gen, dtype)
        else:
            raise ValueError(f"radial must be 'mlp' or 'spline', got {radial!r}")
        self.w_msg = member_weight(kw, [len(ls_out), c, c], c, gen, dtype)
        self.w_self = member_weight(kw, [len(ls_out), c, c], c, gen, dtype)
        self.species_bias = member_weight(kw, [n_species, c], 1, gen, dtype, gain=0.1)
        self.channels = c
        if last:
            self.act = NoActivation()  # the readout MLP supplies the last nonlinearity
        else:
            if nonlinearity == "gate":
                self.act = GateActivation(kw, ls_out, c, gen, dtype)
            elif nonlinearity == "s2grid":
                if ls_out != list(range(lmax + 1)):
                    raise ValueError("the s2grid nonlinearity needs every l = 0..lmax in a hidden layer")
                self.act = S2GridActivation(lmax, grid_resolution, dtype)
            else:
                raise ValueError(f"nonlinearity must be 'gate' or 's2grid', got {nonlinearity!r}")

    def forward(self, feats: List[Tensor], sh: Tensor, basis: Tensor, centre: Tensor, neighbour: Tensor,
                types: Tensor, n_out: int) -> List[Tensor]:
        """Features of rows ``:n_out`` (every centre must be below ``n_out``; the full model passes all rows,
        the layer-wise contract only the owned atoms)."""
        k, n = feats[0].shape[0], n_out
        e = sh.shape[1]
        c = self.channels
        up: List[Tensor] = []
        for i in range(len(self.ls_in)):
            up.append(batched_linear(feats[i], self.w_up[:, i]).index_select(1, neighbour))  # [K, E, C, d1]
        # one view per path and per degree of Y, taken once: their backward is one stack / one cat, where a
        # slice per path would each fill a zero tensor of the whole radial output (or of sh) in the backward
        radial = self.radial(basis).view(k, e, self.n_paths, c).unbind(2)
        sh_l = torch.split(sh, [2 * l + 1 for l in range(self.lmax_sh + 1)], dim=2)
        out: List[Tensor] = []
        for o in range(len(self.ls_out)):
            # the sum of the paths into degree o, started from the first one's message (no zero tensor)
            paths = self.paths_into[o]
            edge_msg = self.path_message(paths[0], up, sh_l, radial)
            for p in paths[1:]:
                edge_msg = edge_msg + self.path_message(p, up, sh_l, radial)
            agg = torch.zeros((k, n, c, self.dims_out[o]), dtype=sh.dtype, device=sh.device)
            agg = agg.index_add_(1, centre, edge_msg) * self.norm
            y = batched_linear(agg, self.w_msg[:, o])
            s = self.self_index[o]
            if s >= 0:
                y = y + batched_linear(feats[s][:, :n], self.w_self[:, o])
            out.append(y)
        bias = self.species_bias.index_select(1, types[:n]).expand(k, -1, -1)  # [K, N, C]
        out[0] = out[0] + bias.unsqueeze(-1)
        return self.act(out)

    def path_message(self, p: int, up: List[Tensor], sh_l: List[Tensor], radial: List[Tensor]) -> Tensor:
        """Edge messages [K, E, C, 2l3+1] of path p: neighbour features (l1) x Y_l2 coupled to l3, radially weighted."""
        i1, l2, o = self.p_in[p], self.p_sh[p], self.p_out[p]
        d1, d2, d3 = self.dims_in[i1], 2 * l2 + 1, self.dims_out[o]
        coupling = torch.einsum("kej,ijm->keim", sh_l[l2], self.cg[p, :d1, :d2, :d3])  # [K, E, d1, d3]
        if d1 == 1:
            # scalar input (every path of the first layer): an outer product of the radially weighted channels
            # [K, E, C] with the coupling row [K, E, d3]; no [K, E, C, d3] intermediates but the result
            weighted = up[i1].squeeze(-1) * radial[p]
            return weighted.unsqueeze(-1) * coupling[:, :, 0].unsqueeze(2)
        return torch.einsum("keci,keim->kecm", up[i1], coupling) * radial[p].unsqueeze(-1)
