"""Write and read exported model files (TorchScript + metadata.json extra file)."""
from __future__ import annotations

import builtins
import os
import re
import zipfile
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from . import contract
from .contract import ModelFormatError

PathLike = Union[str, "os.PathLike[str]"]


def _module_dtype(module: torch.nn.Module) -> str:
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            return str(t.dtype).replace("torch.", "")
    return "float64"


def output_path(path: PathLike) -> Path:
    """Where a model file will be written: checked (runsafe.check_output), parent folders created."""
    from .runsafe import check_output

    path = check_output(path, "model file")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def export(model: torch.nn.Module, path: PathLike, **metadata: Any) -> Path:
    """Script ``model`` and save it with its metadata to ``path``.

    Metadata not given is taken from the module (``species``, ``cutoff``, ``ensemble_size``,
    ``uncertainty_scale``, ``interaction_range()``, ``kind``; lattice: ``halo``, and ``fallback_range``,
    ``fallback`` for a model with the exact local solver) and from its parameters (``dtype``).
    """
    kind = metadata.get("kind", getattr(model, "kind", "atomistic"))
    meta: Dict[str, Any] = {
        "format_version": contract.FORMAT_VERSION,
        "kind": kind,
        "dtype": _module_dtype(model),
        "ensemble_size": int(getattr(model, "ensemble_size", 1)),
        "uncertainty_scale": float(getattr(model, "uncertainty_scale", 1.0)),
        "description": "",
        "references": [],
    }
    if kind == "atomistic":
        if "interaction_range" not in metadata:  # scripted modules only keep exported methods
            rng = getattr(model, "interaction_range", None)
            meta["interaction_range"] = float(rng() if callable(rng) else model.cutoff)
        meta.update(species=list(model.species), cutoff=float(model.cutoff),
                    length_unit="angstrom", energy_unit="eV")
    else:
        # the halo compute_lattice_block needs (contract, Lattice); modules without the method: the patch radius
        meta.update(species=list(getattr(model, "species", [])), cutoff=float(getattr(model, "cutoff", 0.0)),
                    interaction_range=float(getattr(model, "halo", getattr(model, "cutoff", 0.0))),
                    length_unit="lattice", energy_unit="t")
        if hasattr(model, contract.LATTICE_FALLBACK_METHOD):  # the exact local solver (holstein.fallback)
            meta.update(fallback_range=int(model.fallback_range),
                        fallback={"radius": int(model.fallback_radius), "n_moments": int(model.fallback_moments)})
    if all(hasattr(model, name) for name in contract.LAYERWISE_METHODS):
        meta["message_passing"] = {"layers": int(model.mp_layers), "feature_dim": int(model.mp_feature_dim)}
    meta.update(metadata)
    meta.setdefault("outputs", contract.outputs_for(kind, meta["ensemble_size"],
                                                    bool(getattr(model, "energy_based", True))))
    meta = contract.validate_metadata(meta, source=f"export({os.fspath(path)})")
    for attr in ("cutoff", "ensemble_size", "uncertainty_scale"):
        if hasattr(model, attr) and float(getattr(model, attr)) != float(meta[attr]):
            # the module uses its own attribute at run time, so it must agree with the metadata
            setattr(model, attr, type(getattr(model, attr))(meta[attr]))
    path = output_path(path)
    scripted = model if isinstance(model, torch.jit.ScriptModule) else torch.jit.script(model)
    check_module_against_metadata(scripted, meta, f"export({os.fspath(path)})")
    torch.jit.save(scripted, str(path), _extra_files={contract.METADATA_FILE: contract.dumps(meta)})
    return path


def _whole_halo(halo, needed: str) -> int:
    """A block halo as an int; ValueError when it is not a whole number of sites (``needed`` says the minimum)."""
    if isinstance(halo, bool) or int(halo) != halo:
        raise ValueError(f"halo {halo!r} must be a whole number of sites; {needed}")
    return int(halo)


class LoadedModel:
    """A validated exported model: ``module`` (TorchScript) and ``metadata`` (dict)."""

    def __init__(self, module: torch.jit.ScriptModule, metadata: Dict[str, Any], path: Path, device: str):
        self.module = module
        self.metadata = metadata
        self.path = path
        self.device = torch.device(device)

    kind = property(lambda self: self.metadata["kind"])
    species = property(lambda self: list(self.metadata["species"]))
    cutoff = property(lambda self: self.metadata["cutoff"])
    interaction_range = property(lambda self: self.metadata["interaction_range"])
    ensemble_size = property(lambda self: self.metadata["ensemble_size"])
    has_uncertainty = property(lambda self: self.metadata["ensemble_size"] > 1)
    has_virial = property(lambda self: "virial" in self.metadata["outputs"])
    dtype = property(lambda self: getattr(torch, self.metadata["dtype"]))

    def types_of(self, symbols, indices=None, fix: str = "use a model trained for them") -> "np.ndarray":
        """Species index (int64) of each element symbol: the one element -> type map of every engine."""
        return species_types(self.species, symbols, indices, fix)

    def compute(self, positions, types, edge_index, shifts, n_local: Optional[int] = None,
                need_virial: bool = True, need_uncertainty: bool = False) -> Dict[str, torch.Tensor]:
        """Call the contract method (atomistic kind)."""
        n_local = positions.shape[0] if n_local is None else int(n_local)
        return self._call(self.module.compute, positions, types, edge_index, shifts, n_local, need_virial,
                          need_uncertainty)

    def compute_lattice_block(self, Q_block: torch.Tensor, halo: int,
                              need_uncertainty: bool = False) -> Dict[str, torch.Tensor]:
        """Call the lattice block method (contract, Lattice): forces on the interior of a block with a halo of
        ``halo`` >= ``interaction_range`` sites. Files exported before the method existed: ModelFormatError
        naming the re-export command."""
        if self.kind != "lattice":
            raise ValueError(f"{self.path}: {contract.LATTICE_BLOCK_METHOD}() is for lattice models, this one is "
                             f"{self.kind}. Use compute() with positions and a neighbour list")
        if not hasattr(self.module, contract.LATTICE_BLOCK_METHOD):
            raise ModelFormatError(
                f"{self.path}: this lattice model file has no {contract.LATTICE_BLOCK_METHOD}() method (it was "
                "exported before domain-decomposed lattice evaluation existed), so an engine cannot split its "
                "lattice into blocks. Re-export it, keeping its weights, with `python -m "
                f"mlpot_plugins.pretrained.reexport_holstein {self.path}`")
        halo = _whole_halo(halo, f"the model needs at least {self.interaction_range:g} (metadata interaction_range)")
        return self._call(self.module.compute_lattice_block, Q_block, halo, bool(need_uncertainty))

    def compute_lattice_block_fallback(self, Q_block: torch.Tensor, halo: int,
                                       threshold: float) -> Dict[str, torch.Tensor]:
        """The block method with the exact local solver (contract, Lattice fallback): forces with every site whose
        calibrated std > ``threshold`` replaced by the exact force, ``forces_std``, ``fallback_mask``. Models
        exported without the solver: ModelFormatError naming the export command that adds it."""
        threshold = self.check_fallback(threshold)
        halo = _whole_halo(halo, f"the fallback needs at least {self.metadata['fallback_range']} (metadata "
                                 "fallback_range)")
        return self._call(self.module.compute_lattice_block_fallback, Q_block, halo, threshold)

    def check_fallback(self, threshold) -> float:
        """``threshold`` as a float, after checking that this model carries the exact local solver and that the
        threshold is a force std > 0 (engines call it when a fallback is asked for, before running anything);
        ValueError or ModelFormatError naming the fix otherwise."""
        if self.kind != "lattice":
            raise ValueError(f"{self.path}: the uncertainty-gated fallback is for lattice models, this one is "
                             f"{self.kind}; run it without a fallback threshold")
        if not hasattr(self.module, contract.LATTICE_FALLBACK_METHOD):
            raise ModelFormatError(
                f"{self.path}: this lattice model carries no exact local solver ({contract.LATTICE_FALLBACK_METHOD}"
                "() method), so an engine cannot fall back to exact forces on uncertain sites. Export it with "
                f"the solver (weights unchanged): `mlpot holstein export {self.path} --fallback-radius 6 --out "
                f"{self.path.with_name(self.path.stem + '-fallback.pt').name}`, or run without a fallback threshold")
        try:
            value = float(threshold)
        except (TypeError, ValueError):
            value = float("nan")
        if not value > 0:
            raise ValueError(f"fallback threshold {threshold!r} must be a force std > 0 (in the model's units: t per "
                             "Q unit for a lattice model), e.g. 0.05; leave the fallback out for none")
        return value

    @staticmethod
    def _call(method, *args) -> Dict[str, torch.Tensor]:
        """A contract method, its outputs detached (TorchScript's profiling executor can hand back
        graph-attached tensors once it specialises a module that calls submodules) and TorchScript errors
        with the model's own message first."""
        try:
            out = method(*args)
            return {key: value.detach() for key, value in out.items()}
        except Exception as exc:  # torch.jit.Error is no RuntimeError: surface the model's own message
            err = torchscript_error(exc)
            if err is exc:
                raise
            raise err from None

    def compute_on(self, positions, cell, pbc, types, need_virial: bool = True,
                   need_uncertainty: bool = False) -> Dict[str, torch.Tensor]:
        """The contract method on Angstrom positions (numpy) with a vesin neighbour list and periodic
        shifts, so there are no ghosts: the one path of the ASE calculator and the OpenMM reporter."""
        from .neighbors import neighbor_list

        edge_index, shifts = neighbor_list(positions, cell, pbc, self.cutoff)
        dt, dev = self.dtype, self.device
        return self.compute(
            torch.as_tensor(positions, dtype=dt, device=dev), torch.as_tensor(types, device=dev),
            torch.as_tensor(edge_index, device=dev), torch.as_tensor(shifts, dtype=dt, device=dev),
            need_virial=need_virial and self.has_virial,
            need_uncertainty=need_uncertainty and self.has_uncertainty)

    def __repr__(self) -> str:
        m = self.metadata
        return (f"LoadedModel({m.get('name') or self.path.name!r}, kind={m['kind']}, species={m['species']}, "
                f"cutoff={m['cutoff']}, ensemble_size={m['ensemble_size']})")


def species_types(species, symbols, indices=None, fix: str = "use a model trained for them") -> "np.ndarray":
    """Species index (int64) of each symbol; ValueError naming the unknown elements and their indices
    (``indices[k]`` names symbol k; default: its position) and ``fix``."""
    import numpy as np

    index = {s: i for i, s in enumerate(species)}
    bad = [k for k, s in enumerate(symbols) if s not in index]
    if bad:
        found = sorted({str(symbols[k]) for k in bad})
        where = [int(indices[k]) if indices is not None else k for k in bad]
        shown = ", ".join(str(i) for i in where[:10]) + (", ..." if len(where) > 10 else "")
        raise ValueError(f"element(s) {found} (atom(s) [{shown}]) not in the model's species {list(species)}; {fix}")
    return np.array([index[s] for s in symbols], dtype=np.int64)


class NotAModelFileError(FileNotFoundError):
    """The model path names no file (a directory, a socket...): there is no model file at that path."""


def resolve_model_path(model: PathLike) -> Path:
    """A file path, or the name of a model shipped in the package (or in ``$MLPOT_PRETRAINED_DIR``)."""
    from .pretrained import pretrained_names, pretrained_path

    path = Path(model)
    if path.is_file():
        return path
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.pt"))[:5]
        raise NotAModelFileError(f"model {os.fspath(model)!r} is a directory, not a model file. Give the path of "
                                f"an exported .pt file{' (this directory holds ' + ', '.join(inside) + ')' if inside else ''}")
    if path.exists():
        raise NotAModelFileError(f"model {os.fspath(model)!r} is not a regular file. Give the path of an exported .pt file")
    names = pretrained_names()  # names the bad $MLPOT_PRETRAINED_DIR if that is the problem
    if str(model) in names:
        return pretrained_path(str(model))
    raise FileNotFoundError(
        f"model file {os.fspath(model)!r} does not exist and is not a shipped model name. "
        f"Give a path to an exported .pt file or one of {names} (see `mlpot models`)")


def resolve_device(device: Union[str, torch.device], available: bool = True) -> torch.device:
    """A torch device the model can run on (with ``available``: here and now); ValueError (bad name) or
    RuntimeError (CUDA not available) naming the problem and the fix otherwise."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a torch device name. Use 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and available:
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} asked for, but CUDA is not available to this torch "
                               f"({torch.__version__}, built with CUDA {torch.version.cuda}; "
                               f"{'no GPU visible' if torch.version.cuda else 'a CPU-only build'}). "
                               "Use device='cpu', or run on a machine with a GPU and a CUDA build of torch")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {device!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) "
                               f"are visible. Use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r} is not supported by mlpot models. Use 'cpu' or 'cuda[:N]'")
    return dev


def use_dynamic_shapes() -> None:
    """Edge counts change every MD step; TorchScript's default static-shape specialisation recompiles
    the graph for each new shape (~1 s a call for the first ~20 calls of a message-passing model).
    Dynamic-shape specialisation avoids it. Process-wide, so it also covers openmm-torch's executor;
    the LAMMPS plugin sets the same in C++."""
    torch.jit.set_fusion_strategy([("DYNAMIC", 2)])


def resolve_dtype(dtype: Union[None, str, torch.dtype]) -> Optional[torch.dtype]:
    """None (the file's own dtype), "float32"/"float64" or the torch dtype -> torch dtype; anything else
    (float16, bfloat16, integers, typos) -> ValueError naming the choices."""
    if dtype is None:
        return None
    name = str(dtype).replace("torch.", "")
    if name not in contract.DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported; use None (the model file's own), "
                         f"{' or '.join(repr(d) for d in contract.DTYPES)} (half precision is too coarse for "
                         "forces)")
    return getattr(torch, name)


def convert_dtype(loaded: "LoadedModel", dtype: Union[None, str, torch.dtype]) -> "LoadedModel":
    """Cast a freshly loaded model's parameters and buffers to ``dtype`` in place (metadata follows).

    Atomistic models only: every tensor an atomistic module makes follows its inputs' and weights' dtype.
    A trained float64 model in float32 is ~1.6-3x faster (docs/equivariant.md, "Speed")."""
    want = resolve_dtype(dtype)
    if want is None or want == loaded.dtype:
        return loaded
    if loaded.kind != "atomistic":
        raise ValueError(f"{loaded.path}: dtype conversion is for atomistic models; this {loaded.kind!r} model "
                         f"runs in its exported dtype {loaded.metadata['dtype']} (drop the dtype choice, or "
                         "export it from training in the dtype you want)")
    loaded.module = loaded.module.to(want)
    loaded.metadata = dict(loaded.metadata, dtype=str(want).replace("torch.", ""))
    check_module_against_metadata(loaded.module, loaded.metadata, f"{loaded.path} as {loaded.metadata['dtype']}")
    return loaded


def is_model_file(path: PathLike) -> bool:
    """True for an exported model file or shipped model name (a TorchScript archive with the metadata extra
    file)."""
    try:
        with zipfile.ZipFile(resolve_model_path(path)) as z:
            return any(n.endswith("extra/" + contract.METADATA_FILE) for n in z.namelist())
    except (OSError, zipfile.BadZipFile, ModelFormatError):
        return False


def save_loaded(loaded: "LoadedModel", path: PathLike) -> Path:
    """Write a (possibly converted) loaded model back to a model file with its metadata."""
    meta = contract.validate_metadata(dict(loaded.metadata), source=f"save({os.fspath(path)})")
    path = output_path(path)
    torch.jit.save(loaded.module, str(path), _extra_files={contract.METADATA_FILE: contract.dumps(meta)})
    return path


def load(model: PathLike, device: str = "cpu", dtype: Union[None, str, torch.dtype] = None) -> LoadedModel:
    """Load and validate an exported model file or a shipped model name; ``dtype`` ("float32"/"float64",
    None: the file's own) casts an atomistic model at load (convert_dtype)."""
    want = resolve_dtype(dtype)  # before loading: a bad choice is not a file problem
    use_dynamic_shapes()
    dev = resolve_device(device)  # before loading: "CUDA unavailable" is not a file problem
    path = resolve_model_path(model)
    if not zipfile.is_zipfile(path):
        raise ModelFormatError(f"{path}: not a TorchScript archive (not a zip file). "
                               "Export the model with mlpot_plugins.export() or `mlpot export`")
    load_torch_libraries(path)
    extra = {contract.METADATA_FILE: ""}
    try:
        module = torch.jit.load(str(path), map_location=dev, _extra_files=extra)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFormatError(f"{path}: not a loadable TorchScript archive ({first}). "
                               "Export the model with mlpot_plugins.export()") from None
    text = extra[contract.METADATA_FILE]
    if isinstance(text, bytes):
        text = text.decode()
    if not text:
        raise ModelFormatError(f"{path}: TorchScript archive has no {contract.METADATA_FILE}. "
                               "It was not written by mlpot_plugins.export(); re-export it")
    meta = contract.loads(text, source=str(path))
    check_module_against_metadata(module, meta, str(path))
    return convert_dtype(LoadedModel(module, meta, path, str(dev)), want)


def load_torch_libraries(path: Path) -> None:
    """Import the TorchScript extension providers a model lists in ``torch_libraries`` (contract), before
    torch.jit.load."""
    import importlib

    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith("/extra/" + contract.METADATA_FILE)]
        if not names:
            return  # reported by load() after torch.jit.load
        text = archive.read(names[0]).decode()
    if "torch_libraries" not in text:
        return
    for entry in contract.loads(text, source=str(path))["torch_libraries"]:
        module = entry["python_module"]
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ModelFormatError(f"{path}: the model needs the TorchScript extensions of Python module "
                                   f"{module!r}, which is not importable here ({exc}). Install it in this "
                                   f"environment (`pip install {contract.extension_package(module)}`)") from None


_TS_ERROR = re.compile(r"^(?:builtins\.)?([A-Za-z_][\w.]*(?:Error|Exception)): ", re.M)


def torchscript_error(exc: BaseException) -> BaseException:
    """The useful part of a TorchScript interpreter error, first: ``The following operation failed in the
    TorchScript interpreter ... builtins.ValueError: msg`` becomes ``ValueError("msg ...")`` (the
    TorchScript traceback kept after the message). Other exceptions are returned as they are."""
    text = str(exc)
    if "TorchScript interpreter" not in text:
        return exc
    matches = list(_TS_ERROR.finditer(text))
    if not matches:
        return exc
    last = matches[-1]
    name, message = last.group(1).rsplit(".", 1)[-1], text[last.end():].strip()
    cls = getattr(builtins, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        cls = RuntimeError
    trace = text[:last.start()].strip()
    try:
        return cls(f"{message}\n(TorchScript traceback, most recent call last:\n{trace})")
    except Exception:
        return RuntimeError(f"{message}\n({trace})")


def check_module_against_metadata(module, meta: Dict[str, Any], source: str) -> None:
    """The one check that a module does what its metadata says (mirrored in C++ by the LAMMPS plugin).

    For each of cutoff, ensemble_size, uncertainty_scale and n_species (= len(species), atomistic):
    if the module has the attribute it must equal the metadata value; every floating parameter and
    buffer has the metadata dtype; the kind's method exists; atomistic committees have
    ``force_uncertainty``; a lattice module with ``compute_lattice_block`` has ``halo`` = metadata
    ``interaction_range``; a lattice module has ``compute_lattice_block_fallback`` exactly when the metadata has
    ``fallback``, and then ``fallback_range``, ``fallback_radius``, ``fallback_moments`` equal it; a module
    exporting the layer-wise methods has all of them and metadata ``message_passing`` whose layers/feature_dim
    equal its ``mp_layers``/``mp_feature_dim`` (and vice versa). Raises ModelFormatError naming the field and
    the fix.
    """
    method = contract.METHOD_FOR_KIND[meta["kind"]]
    if not hasattr(module, method):
        raise ModelFormatError(f"{source}: metadata says kind {meta['kind']!r} but the module has no "
                               f"exported {method}() method. Re-export with the right kind")
    if meta["kind"] == "atomistic" and meta["ensemble_size"] > 1 and not hasattr(module, contract.UNCERTAINTY_METHOD):
        raise ModelFormatError(f"{source}: metadata says ensemble_size={meta['ensemble_size']} but the module has "
                               f"no exported {contract.UNCERTAINTY_METHOD}() method. Export a committee model "
                               "(with @torch.jit.export force_uncertainty) or use ensemble_size=1")
    has_fallback = meta["kind"] == "lattice" and hasattr(module, contract.LATTICE_FALLBACK_METHOD)
    if has_fallback != ("fallback" in meta):
        raise ModelFormatError(f"{source}: the module {'exports' if has_fallback else 'has no'} "
                               f"{contract.LATTICE_FALLBACK_METHOD}() but the metadata "
                               f"{'lacks' if has_fallback else 'has'} 'fallback'/'fallback_range'. Re-export the "
                               f"model with `{contract.FALLBACK_EXPORT_HINT}`")
    checks = {"cutoff": meta["cutoff"], "ensemble_size": meta["ensemble_size"],
              "uncertainty_scale": meta["uncertainty_scale"]}
    fields = {attr: attr for attr in checks}  # module attribute -> metadata field
    if meta["kind"] == "atomistic":
        checks["n_species"], fields["n_species"] = len(meta["species"]), "n_species"
    elif hasattr(module, contract.LATTICE_BLOCK_METHOD):
        if not hasattr(module, "halo"):
            raise ModelFormatError(f"{source}: the module exports {contract.LATTICE_BLOCK_METHOD}() but has no "
                                   "integer attribute 'halo' (the block halo it needs, = metadata "
                                   "interaction_range). Add it to the model and re-export")
        checks["halo"], fields["halo"] = meta["interaction_range"], "interaction_range"
    if has_fallback:
        for attr, expected in (("fallback_range", meta["fallback_range"]),
                               ("fallback_radius", meta["fallback"]["radius"]),
                               ("fallback_moments", meta["fallback"]["n_moments"])):
            checks[attr], fields[attr] = expected, attr.replace("_radius", ".radius").replace("_moments", ".n_moments")
    for attr, expected in checks.items():
        if hasattr(module, attr) and float(getattr(module, attr)) != float(expected):
            raise ModelFormatError(f"{source}: metadata {fields[attr]}={expected} contradicts the module's "
                                   f"{attr}={getattr(module, attr)}. Re-export the model")
    layerwise = [name for name in contract.LAYERWISE_METHODS if hasattr(module, name)]
    mp = meta.get("message_passing") or {}
    if layerwise and (len(layerwise) < len(contract.LAYERWISE_METHODS) or not mp):
        missing = [name for name in contract.LAYERWISE_METHODS if name not in layerwise]
        raise ModelFormatError(f"{source}: the module exports {layerwise} of the layer-wise contract but "
                               f"{'lacks ' + str(missing) if missing else 'metadata has no message_passing field'}"
                               ". Re-export the model with mlpot_plugins.export()")
    if mp and not layerwise:
        raise ModelFormatError(f"{source}: metadata message_passing={mp} but the module exports none of "
                               f"{list(contract.LAYERWISE_METHODS)}. Re-export the model with mlpot_plugins.export()")
    for attr, key in (("mp_layers", "layers"), ("mp_feature_dim", "feature_dim")):
        if mp and int(getattr(module, attr, -1)) != mp[key]:
            raise ModelFormatError(f"{source}: metadata message_passing {key}={mp[key]} contradicts the module's "
                                   f"{attr}={getattr(module, attr, None)}. Re-export the model")
    named = list(module.named_parameters()) + list(module.named_buffers())
    bad = [(n, t.dtype) for n, t in named if t.is_floating_point() and str(t.dtype).replace("torch.", "") != meta["dtype"]]
    if bad:
        raise ModelFormatError(f"{source}: metadata dtype {meta['dtype']} contradicts the module's tensor(s) "
                               f"{', '.join(f'{n} ({d})' for n, d in bad[:5])}{' ...' if len(bad) > 5 else ''}. "
                               "Convert the whole module with .to(dtype) and re-export it")
