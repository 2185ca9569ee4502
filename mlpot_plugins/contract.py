"""The exported-model contract: the single source of truth every engine follows.

A model file is a TorchScript archive holding

* the scripted module, which exposes ``compute`` (atomistic kind) or ``compute_lattice``
  (lattice kind) as an exported method, plus ``force_uncertainty`` for atomistic committees;
* ``metadata.json`` as an *extra file*, so Python (``torch.jit.load(..., _extra_files=...)``) and
  C++ (``torch::jit::load(path, device, extra_files)``) read it without running the model.

Loading checks the metadata (``validate_metadata``) and then the module against it, in one function
(``model_file.check_module_against_metadata``, mirrored by the LAMMPS plugin): cutoff, ensemble_size,
uncertainty_scale and n_species (= len(species)) equal the module's attributes where it has them; every
floating parameter and buffer has the metadata ``dtype``; the kind's method exists; atomistic
committees export ``force_uncertainty``; a lattice module exporting ``compute_lattice_block`` has an
integer ``halo`` equal to ``interaction_range``.

Atomistic ``compute(positions, types, edge_index, shifts, n_local, need_virial, need_uncertainty)``
-------------------------------------------------------------------------------------------------
Inputs (dtype of positions/shifts = the model's ``dtype``; lengths in ``length_unit``):

``positions``  [N, 3]  local atoms first (``n_local`` of them), then ghost atoms (LAMMPS) if any.
``types``      [N]     int64 index into ``species``.
``edge_index`` [2, E]  int64, a *full* (directed) list: edge e goes from centre ``edge_index[0, e]``
                       to neighbour ``edge_index[1, e]``; every centre that needs an energy has all
                       its neighbours within ``cutoff``. Ghost centres are needed only for
                       message-passing models (``interaction_range > cutoff``).
``shifts``     [E, 3]  Cartesian periodic shift: r_e = positions[j] - positions[i] + shifts[e].
                       Zero where ghosts carry the image positions (LAMMPS).
``n_local``    int     atoms whose energies are counted; atoms >= n_local are ghosts.

Outputs (dict; energies in ``energy_unit``):

``energy``        []        total energy of the local atoms (committee mean).
``energies``      [n_local] per-atom energies.
``forces``        [N, 3]    -dE/dpositions on all atoms. Ghost rows must be added to their owners
                            (LAMMPS reverse communication); with shifts-based PBC there are no ghosts.
``virial``        [3, 3]    (need_virial) W = -sum_e r_e (x) dE/dr_e; ASE stress = -W / V.
``atom_virial``   [N, 3, 3] (need_virial) each edge's term split half/half between its two atoms.
With ``need_uncertainty`` and ``ensemble_size > 1`` also:
``member_energy`` [K]          total energy of each member.
``member_forces`` [K, N, 3]    forces of each member (ghost rows to be summed like ``forces``).
``forces_std``    [N]          force_uncertainty(member_forces): calibrated per-atom force std
                               (valid as is when there are no ghosts).
``energies_std``  [n_local]    calibrated per-atom energy std.
``energy_std``    []           calibrated std of the total energy.
``member_virial`` [K, 3, 3]    (also need_virial) virial of each member, as ``virial`` (summed over
                               ranks like it). Optional: models exported before it existed lack it;
                               engines then report no virial deviation (LAMMPS model_devi: 0, warned).

``force_uncertainty(member_forces [K, n, 3]) -> [n]``: sqrt(mean_k |F_k - mean F|^2) times
``uncertainty_scale``. Engines with ghosts sum member forces over images first, then call this.

Message passing layer by layer (optional ``message_passing`` field)
------------------------------------------------------------------
A message-passing model (``interaction_range`` = layers x ``cutoff``) may also export what an engine with
ghost atoms needs to evaluate it one layer at a time on its own atoms plus ghosts ONE cutoff deep, exchanging
node features of ghosts between layers instead of recomputing the network on an n-cutoff ghost shell.
Metadata ``message_passing``: ``{"layers": L, "feature_dim": F}`` (F: the widest per-atom feature row an engine
exchanges, all copies included); the module has the integer attributes ``mp_layers`` = L and
``mp_feature_dim`` = F (checked on load) and exports

``mp_copies(need_uncertainty) -> c``                     copies of the geometry/features: K (committees), or 1
                                                         when members share their trunk and only the mean is needed.
``mp_edges(edge_vectors [c, E, 3]) -> attr``              per-edge geometry, computed once for all layers: a list
                                                         of tensors [c, E, G_i] (separate pieces, e.g. harmonics and
                                                         radial basis, so no layer copies slices of one), or one
                                                         tensor [c, E, G] (files exported before stop 26).
``mp_embed(types [N], c) -> h_0 [N, F_0]``               input features of layer 0 (species only).
``mp_layer(t, h_t [N, F_t], attr, edge_index, types [N], n_local) -> h_t+1 [n_local, F_t+1]``
                                                         layer t on rows < n_local; every edge's centre is below
                                                         n_local, neighbours may be ghosts (rows >= n_local);
                                                         attr in the form mp_edges returned it.
``mp_readout(h_L [n, F_L], types [n]) -> energies [K, n]`` per-atom energy of each member.
``mp_outputs(edge_vectors [E, 3], edge_grad [c, E, 3], edge_index, N, energies [K, n_local], need_virial,
            need_uncertainty) -> dict``                  the outputs of ``compute`` (forces of all N rows, ghost
                                                         rows to be summed into owners, as ``compute``'s).
Features of member copies sit side by side in a row (no cross-member coupling), so every member's gradient
comes out of one backward pass. The engine's scheme (``mlpot_plugins.message_passing`` is its reference, equal
to ``compute`` to 1e-10 in fp64; LAMMPS does the same across ranks):

1. r = positions[j] - positions[i] for the edges of owned centres (ghosts at image positions), or, with all
   periodic images of one atom sharing one row (an own atom's, or one ghost row per foreign atom: LAMMPS's
   default), r = positions[j] + shift - positions[i]; images are never recomputed. Leaves r_c = c copies of r,
   attr = mp_edges(r_c) (each tensor a detached leaf, passed to mp_layer in the form it came in);
   h_0 = mp_embed(types, c) on all rows.
2. For t < L: h_t+1 = mp_layer(t, h_t (leaf requiring grad for t > 0), attr, ...) on owned rows; for t + 1 < L
   forward-communicate the owners' rows of h_t+1 to their ghost rows.
3. energies = mp_readout(h_L, owned types); target = energies.sum() (c = K) or energies.sum(1).mean() (c = 1).
4. Backward for t = L-1 .. 0: d target / d (attr tensors, h_t) given the owned rows' gradient of h_t+1 (for
   t = L-1: of the target); accumulate the attr gradients; reverse-communicate (sum) the ghost rows of d/d h_t
   into their owners, which are the gradient of h_t's owned rows for layer t - 1.
5. edge_grad = d attr / d r_c applied to the accumulated attr gradients; mp_outputs(r, edge_grad, ...) gives the
   rank's outputs: energies/virials are summed over ranks, force, member-force and per-atom-virial rows of
   ghosts reverse-communicated (newton on), then ``force_uncertainty`` on the owned rows' member forces.

Extension libraries (optional ``torch_libraries`` field)
-------------------------------------------------------
A model that uses custom TorchScript classes/ops (e.g. an imported metatomic model) lists what must be loaded
before ``torch.jit.load``: ``[{"python_module": "metatomic.torch", "shared_libraries": [path, ...]}]``.
Python engines import ``python_module``; C++ engines ``dlopen(path, RTLD_NOW | RTLD_GLOBAL)`` each path in
the listed order. Empty for plain models. Loading a library runs its native code, so only the providers in
``TORCH_EXTENSIONS`` (module -> allowed library file names) are accepted.

Lattice ``compute_lattice(Q, need_uncertainty)``
------------------------------------------------
``Q`` [..., L, L] lattice displacement field; returns ``forces`` [..., L, L] (on-site forces), and with
``need_uncertainty`` ``forces_std`` [..., L, L]; energy-based models also return ``energy`` [...].
Lattice and Hamiltonian parameters live in ``metadata["extra"]``. ``cutoff`` is the patch radius.

Lattice ``compute_lattice_block(Q_block, halo, need_uncertainty)`` (domain decomposition, optional)
------------------------------------------------------------------------------------------------
For engines that split the lattice into rectangular domains (LAMMPS ranks). ``Q_block``
[..., nx + 2 halo, ny + 2 halo] holds a domain's nx x ny sites plus ``halo`` sites of its neighbours on every
side (periodic images where the domain touches the lattice edge); the block's own edges are open (never
wrapped). Returns, for the nx x ny interior only:

``forces``        [..., nx, ny]     equal to ``compute_lattice`` of the whole periodic lattice on those sites
                                    (fp64: 1e-12) for any split, whenever ``halo >= interaction_range``.
``energy``        [...]             (energy-based models) the interior sites' share of the total energy:
                                    the shares of a partition of the lattice add up to ``compute_lattice``'s.
``member_forces`` [K, ..., nx, ny]  (``need_uncertainty``, ``ensemble_size > 1``) each member's forces.
``forces_std``    [..., nx, ny]     (same) calibrated std over the members, as ``compute_lattice``.

For a lattice model ``interaction_range`` is that minimal halo in sites (an integer; x and y alike): the
largest lattice-axis offset a force depends on (the patch's floor(sqrt(radius2)) for direct models, twice
that for energy-based ones, whose F_i = -dE/dQ_i collects site energies up to a patch away). A smaller halo
raises ValueError naming the needed one. The module carries it as the integer attribute ``halo``, checked
against the metadata on load. Files exported before this method existed (their ``interaction_range`` is
the patch radius) still load and run ``compute_lattice``; asking them for the block method
(``LoadedModel.compute_lattice_block``) raises ModelFormatError naming the fix: re-export with
``python -m mlpot_plugins.pretrained.reexport_holstein MODEL.pt`` (weights unchanged).

Lattice ``compute_lattice_block_fallback(Q_block, halo, threshold)`` (exact local solver, optional)
---------------------------------------------------------------------------------------------------
A lattice committee may carry its exact local solver (Holstein: the windowed KPM site density, float64), so
engines replace the force of every uncertain site by the exact one. Same block as ``compute_lattice_block``
(one or more fields, open edges), ``halo >= fallback_range``; returns for the interior [..., nx, ny]:

``forces``        the ML force, replaced by the exact (electronic + elastic) force on every site whose
                  calibrated ML std > ``threshold``;
``forces_std``    the calibrated ML committee std (before fallback);
``fallback_mask`` float64, 1.0 where the site fell back, else 0.0.

No cap on the number of sites (a cap would depend on the domain split). ``threshold`` <= 0 or NaN, or a halo
below ``fallback_range`` raise ValueError naming the fix. Metadata (present exactly when the method is):
``fallback_range`` (int, the halo it needs: max(interaction_range, window radius)) and ``fallback``
(``{"radius": int, "n_moments": int}``, the solver's window radius and Chebyshev moments), mirrored by the
module's int attributes ``fallback_range``, ``fallback_radius`` and ``fallback_moments``. Written by
``mlpot holstein export MODEL --fallback-radius R --out FILE``; asking a model without it for the fallback
(``LoadedModel.compute_lattice_block_fallback``) raises ModelFormatError naming that command.
"""
from __future__ import annotations

import json
import math
from typing import Any, Dict, List

FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
METADATA_FILE = "metadata.json"
KINDS = ("atomistic", "lattice")
METHOD_FOR_KIND = {"atomistic": "compute", "lattice": "compute_lattice"}
LATTICE_BLOCK_METHOD = "compute_lattice_block"  # domain-decomposed lattice evaluation (see Lattice above)
LATTICE_FALLBACK_METHOD = "compute_lattice_block_fallback"  # the block method with the exact local solver
FALLBACK_EXPORT_HINT = "mlpot holstein export MODEL --fallback-radius 6 --out MODEL-fallback.pt"
UNCERTAINTY_METHOD = "force_uncertainty"
DTYPES = ("float32", "float64")
LENGTH_UNITS = ("angstrom", "lattice")
ENERGY_UNITS = ("eV", "t")  # "t": the lattice model's hopping energy

ATOMISTIC_OUTPUTS = ("energy", "energies", "forces", "virial", "atom_virial")
UNCERTAINTY_OUTPUTS = ("member_energy", "member_forces", "forces_std", "energies_std", "energy_std",
                       "member_virial")
LATTICE_OUTPUTS = ("forces", "energy", "forces_std")

# extension providers a model may ask engines to load: Python module -> shared-library file names it ships
TORCH_EXTENSIONS: Dict[str, tuple] = {
    "metatomic.torch": ("libmetatensor.so", "libmetatensor_torch.so", "libmetatomic_torch.so"),
}


def extension_package(module: str) -> str:
    """The pip package that provides an extension module of ``TORCH_EXTENSIONS`` (for install hints)."""
    return module.split(".")[0] + ("-torch" if module.endswith(".torch") else "")

REQUIRED_FIELDS: Dict[str, type] = {
    "format_version": int,
    "kind": str,
    "species": list,
    "cutoff": float,
    "interaction_range": float,
    "length_unit": str,
    "energy_unit": str,
    "dtype": str,
    "outputs": list,
    "ensemble_size": int,
    "uncertainty_scale": float,
    "description": str,
    "references": list,
}
OPTIONAL_FIELDS: Dict[str, Any] = {"name": "", "extra": {}, "torch_libraries": [], "message_passing": {}}
LAYERWISE_METHODS = ("mp_copies", "mp_edges", "mp_embed", "mp_layer", "mp_readout", "mp_outputs")


class ModelFormatError(ValueError):
    """A model file or its metadata does not follow the mlpot exported-model contract."""


def _fail(problem: str, fix: str) -> None:
    raise ModelFormatError(f"{problem}. {fix}")


def validate_metadata(meta: Dict[str, Any], *, source: str = "metadata") -> Dict[str, Any]:
    """Check and normalise a metadata dict; raise ModelFormatError naming the bad field."""
    if not isinstance(meta, dict):
        _fail(f"{source}: metadata must be a JSON object, got {type(meta).__name__}",
              "Re-export the model with mlpot_plugins.export()")
    out = dict(meta)
    version = out.get("format_version")
    if version is not None and version not in SUPPORTED_FORMAT_VERSIONS:
        _fail(f"{source}: unsupported format_version {version!r} (this mlpot_plugins reads "
              f"{list(SUPPORTED_FORMAT_VERSIONS)})", "Upgrade mlpot_plugins or re-export the model")
    missing = [k for k in REQUIRED_FIELDS if k not in out]
    if missing:
        _fail(f"{source}: missing metadata field(s) {missing}",
              "Pass them to mlpot_plugins.export(model, path, ...)")
    for key, typ in REQUIRED_FIELDS.items():
        value = out[key]
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value = out[key] = float(value)
        if not isinstance(value, typ) or isinstance(value, bool):
            _fail(f"{source}: metadata field {key!r} must be {typ.__name__}, got {value!r}",
                  "Fix the value passed to export()")
    for key, default in OPTIONAL_FIELDS.items():
        out.setdefault(key, default)
    if out["kind"] not in KINDS:
        _fail(f"{source}: kind {out['kind']!r} is not one of {list(KINDS)}", "Use 'atomistic' or 'lattice'")
    if out["dtype"] not in DTYPES:
        _fail(f"{source}: dtype {out['dtype']!r} is not one of {list(DTYPES)}", "Use float32 or float64")
    if out["length_unit"] not in LENGTH_UNITS or out["energy_unit"] not in ENERGY_UNITS:
        _fail(f"{source}: units {out['length_unit']!r}/{out['energy_unit']!r} are not supported "
              f"(length {list(LENGTH_UNITS)}, energy {list(ENERGY_UNITS)})",
              "Export in angstrom and eV (atomistic) or lattice units (lattice)")
    species = out["species"]
    if out["kind"] == "atomistic":
        if not species or not all(isinstance(s, str) and s for s in species):
            _fail(f"{source}: species must be a non-empty list of element names, got {species!r}",
                  "Pass species=['Cu', ...] in type order")
        if len(set(species)) != len(species):
            _fail(f"{source}: duplicate species in {species!r}", "List each element once")
        if not (out["cutoff"] > 0 and math.isfinite(out["cutoff"])):
            _fail(f"{source}: cutoff must be a positive finite number, got {out['cutoff']!r}",
                  "Pass the model's cutoff in angstrom")
        if out["interaction_range"] < out["cutoff"]:
            _fail(f"{source}: interaction_range {out['interaction_range']} is smaller than cutoff "
                  f"{out['cutoff']}", "Use n_layers * cutoff for message-passing models")
        allowed = ATOMISTIC_OUTPUTS + UNCERTAINTY_OUTPUTS
    else:
        allowed = LATTICE_OUTPUTS
    unknown = [o for o in out["outputs"] if o not in allowed]
    if unknown or "forces" not in out["outputs"]:
        _fail(f"{source}: outputs {out['outputs']!r} must include 'forces' and only use {list(allowed)}",
              "List the outputs the module really returns")
    if out["ensemble_size"] < 1:
        _fail(f"{source}: ensemble_size must be >= 1, got {out['ensemble_size']}", "Use 1 for a single model")
    has_unc = "forces_std" in out["outputs"]
    if has_unc != (out["ensemble_size"] > 1):
        _fail(f"{source}: outputs list forces_std={has_unc} but ensemble_size={out['ensemble_size']}",
              "Uncertainty outputs exist exactly when ensemble_size > 1")
    if not (out["uncertainty_scale"] > 0):
        _fail(f"{source}: uncertainty_scale must be > 0, got {out['uncertainty_scale']}",
              "Use 1.0 for an uncalibrated committee")
    if not isinstance(out["extra"], dict):
        _fail(f"{source}: 'extra' must be a JSON object", "Pass extra={...}")
    if "fallback_range" in out or "fallback" in out:
        fb, rng = out.get("fallback"), out.get("fallback_range")
        good = (out["kind"] == "lattice" and isinstance(fb, dict) and set(fb) == {"radius", "n_moments"}
                and all(isinstance(v, int) and not isinstance(v, bool) for v in fb.values())
                and fb["radius"] >= 1 and fb["n_moments"] >= 2
                and isinstance(rng, int) and not isinstance(rng, bool)
                and rng >= max(out["interaction_range"], fb["radius"]))
        if not good:
            _fail(f"{source}: fallback_range {rng!r} / fallback {fb!r} must be a lattice model's int halo >= "
                  "max(interaction_range, radius) and {'radius': int >= 1, 'n_moments': int >= 2}",
                  f"Re-export the model with `{FALLBACK_EXPORT_HINT}`")
    mp = out["message_passing"]
    if mp != {} and not (isinstance(mp, dict) and set(mp) == {"layers", "feature_dim"} and all(
            isinstance(mp[key], int) and not isinstance(mp[key], bool) and mp[key] >= 1 for key in mp)):
        _fail(f"{source}: 'message_passing' must be {{'layers': int >= 1, 'feature_dim': int >= 1}} (or absent), "
              f"got {mp!r}", "Re-export the model with mlpot_plugins.export(), which fills it in from the module")
    libs = out["torch_libraries"]
    if not isinstance(libs, list) or not all(
            isinstance(e, dict) and isinstance(e.get("python_module"), str)
            and isinstance(e.get("shared_libraries"), list)
            and all(isinstance(p, str) for p in e["shared_libraries"]) for e in libs):
        _fail(f"{source}: 'torch_libraries' must be a list of {{'python_module': str, 'shared_libraries': "
              f"[str, ...]}}, got {libs!r}", "Re-import the model with `mlpot import`")
    for entry in libs:
        allowed_libs = TORCH_EXTENSIONS.get(entry["python_module"])
        odd = [p for p in entry["shared_libraries"] if allowed_libs is None or p.replace("\\", "/").rsplit("/", 1)[-1]
               not in allowed_libs]
        if allowed_libs is None or odd:
            _fail(f"{source}: torch_libraries asks to load {entry['python_module']!r} {odd or ''}, which is not a "
                  f"known extension provider ({ {k: list(v) for k, v in TORCH_EXTENSIONS.items()} }); loading it "
                  "would run unknown native code", "Re-import the model with `mlpot import`")
    return out


def dumps(meta: Dict[str, Any]) -> str:
    return json.dumps(meta, indent=1, sort_keys=True)


def loads(text: str, *, source: str) -> Dict[str, Any]:
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{source}: metadata.json is not valid JSON ({exc}). "
                               "Re-export the model with mlpot_plugins.export()") from None
    return validate_metadata(meta, source=source)


def outputs_for(kind: str, ensemble_size: int, energy_based: bool = True) -> List[str]:
    """The ``outputs`` list a standard model of this kind/ensemble size declares."""
    if kind == "lattice":
        outs = ["forces"] + (["energy"] if energy_based else [])
        return outs + (["forces_std"] if ensemble_size > 1 else [])
    outs = list(ATOMISTIC_OUTPUTS)
    return outs + (list(UNCERTAINTY_OUTPUTS) if ensemble_size > 1 else [])
