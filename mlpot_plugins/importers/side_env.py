"""Side environments: a venv for a foreign package whose pins conflict with ours (mace-torch pins e3nn 0.4.4).

The venv lives in ``$MLPOT_CACHE_DIR/side-envs/<name>`` (default ``~/.cache/mlpot_plugins``). Its own
site-packages hold only what the foreign package needs and the main environment lacks or has in another
version; everything else (torch, numpy, ase, ...) is the main environment's, reached through a ``.pth`` file
that comes *after* the venv's own site-packages on ``sys.path`` (so e3nn 0.4.4 there shadows our e3nn).
Nothing big is downloaded twice. Creation is idempotent and locked against concurrent runs.

The converters run in the side env with this package on ``PYTHONPATH`` and write a TorchScript file that
needs nothing but torch.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

READY_FILE = ".mlpot-side-env.json"
MAIN_ENV_PTH = "_mlpot_main_env.pth"
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding mlpot_plugins/


class SideEnvError(RuntimeError):
    """A side environment could not be created or a converter in it failed."""


def _default_progress(msg: str) -> None:
    print(f"mlpot: {msg}", file=sys.stderr, flush=True)


def side_env_root() -> Path:
    from ..lammps import cache_root  # one cache folder for everything mlpot builds

    return cache_root() / "side-envs"


def _main_site_dirs() -> List[str]:
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


def _tail(text: str, n: int = 15) -> str:
    lines = [l for l in text.strip().splitlines() if "is ignored: it is neither a file nor a directory" not in l]
    return "\n".join("    " + l for l in lines[-n:])


class SideEnv:
    """A named side venv holding ``requirements`` (pip specifiers); ``python()`` creates it on first use."""

    def __init__(self, name: str, requirements: Sequence[str], check_code: str,
                 progress: Callable[[str], None] = _default_progress):
        self.name = name
        self.requirements = list(requirements)
        self.check_code = check_code  # Python run in the env to prove it works (imports, versions)
        self.progress = progress
        self.path = side_env_root() / name

    @property
    def spec(self) -> Dict[str, object]:
        from importlib import metadata

        return {"requirements": self.requirements, "main_site": _main_site_dirs(), "torch": metadata.version("torch"),
                "python": sys.version.split()[0], "base": sys.base_prefix}

    def _bin(self, root: Path) -> Path:
        return root / "bin" / "python"

    def is_ready(self) -> bool:
        ready = self.path / READY_FILE
        if not ready.is_file() or not self._bin(self.path).exists():
            return False
        try:
            return json.loads(ready.read_text()).get("spec") == self.spec
        except (OSError, ValueError):
            return False

    def python(self) -> Path:
        """The side env's interpreter, creating the env first if needed (once; concurrent callers wait)."""
        import fcntl

        if self.is_ready():
            return self._bin(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.parent / f".{self.name}.lock", "w") as lock:
            if not _try_lock(lock):
                self.progress(f"waiting for another process that is making the side environment {self.path}")
                fcntl.flock(lock, fcntl.LOCK_EX)
            if not self.is_ready():
                self._create()
        return self._bin(self.path)

    def _create(self) -> None:
        t0 = time.perf_counter()
        tmp = self.path.parent / f".{self.name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        self.progress(f"creating the side environment for {', '.join(self.requirements)} in {self.path} "
                      f"(once; reuses this environment's torch etc., downloads only what is missing)")
        self._run([sys.executable, "-m", "venv", str(tmp)], "creating the venv",
                  "Check that Python's venv module works (`python -m venv /tmp/x`)")
        py = self._bin(tmp)
        site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip())
        (site / MAIN_ENV_PTH).write_text("".join(p + "\n" for p in _main_site_dirs()))
        # 1. resolve against what the main env has (via the .pth): only missing/conflicting packages are listed
        report = tmp / "pip-report.json"
        self.progress("resolving what the side environment needs beyond this environment")
        self._run([str(py), "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report),
                   *self.requirements], "resolving the requirements", self._pip_fix())
        pins = [f"{i['metadata']['name']}=={i['metadata']['version']}"
                for i in json.loads(report.read_text())["install"]]
        # 2. install exactly those into the venv, never touching the main env's packages
        self.progress(f"installing {len(pins)} package(s) into the side environment: {' '.join(pins)}")
        if pins:
            self._run([str(py), "-m", "pip", "install", "--quiet", "--no-deps", "--ignore-installed", *pins],
                      "installing the packages", self._pip_fix())
        self._run([str(py), "-c", self.check_code], "checking the new environment",
                  f"Remove {self.path} and retry; if it fails again, report the output above")
        (tmp / READY_FILE).write_text(json.dumps({"spec": self.spec, "installed": pins,
                                                  "seconds": round(time.perf_counter() - t0, 1)}, indent=1))
        shutil.rmtree(self.path, ignore_errors=True)
        os.replace(tmp, self.path)
        self.progress(f"side environment ready in {time.perf_counter() - t0:.0f} s: {self.path}")

    def _pip_fix(self) -> str:
        return (f"Check that the package index is reachable (pip config, proxy), or install "
                f"{' '.join(self.requirements)} into any venv yourself and pass its interpreter with --python")

    def _run(self, cmd: List[str], what: str, fix: str) -> None:
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise SideEnvError(f"side environment {self.name}: {what} failed (exit {res.returncode}):\n"
                               f"{_tail(res.stdout + res.stderr)}\n{fix}")


def _try_lock(lock) -> bool:
    import fcntl

    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def run_converter(python: Path, module: str, args: Sequence[str], what: str) -> dict:
    """Run ``python -m module args`` (a converter of this package) in a side env; it prints one JSON line
    ``{"ok": ..., ...}`` last. Returns that dict, or raises SideEnvError with the converter's own message."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    res = subprocess.run([str(python), "-m", module, *args], capture_output=True, text=True, env=env)
    last = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    try:
        reply = json.loads(last)
    except ValueError:
        reply = None
    if isinstance(reply, dict) and "ok" in reply:
        if reply["ok"]:
            return reply
        raise SideEnvError(reply["error"])
    raise SideEnvError(f"{what} failed in the side environment ({python}, exit {res.returncode}):\n"
                       f"{_tail(res.stdout + res.stderr, 25)}\nReport this output with the model file's origin")


def find_python(given: Optional[str], env: SideEnv) -> Path:
    """``--python`` if given (an interpreter where the foreign package is installed), else the side env."""
    if given:
        path = Path(given)
        if not path.exists():
            raise SideEnvError(f"--python {given}: no such interpreter. Give the python of a venv where "
                               f"{' '.join(env.requirements)} is installed, or leave --python out to let "
                               "mlpot create a side environment")
        return path
    return env.python()


def import_paths(model, out, what: str):
    """Check the foreign model file exists and pick the output path (MODEL's stem + -mlpot.pt beside it)."""
    src = Path(model)
    if not src.is_file():
        raise FileNotFoundError(f"{what} model file {os.fspath(model)!r} does not exist. Give the path of the "
                                f"{what} model to import")
    dst = Path(out) if out else src.with_name(src.name.split(".")[0] + "-mlpot.pt")
    if dst.resolve() == src.resolve():
        raise ValueError(f"output {dst} would overwrite the {what} model. Choose another path with -o")
    return src.resolve(), dst.resolve()


def check_dtype(dtype: Optional[str]) -> None:
    from ..contract import DTYPES

    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {list(DTYPES)}. Use --dtype float64 (exact, for "
                         "checking against the original) or float32 (faster)")


def add_common_arguments(p, side_env: bool = True) -> None:
    p.add_argument("-o", "--output", help="output model file (default: MODEL's name with -mlpot.pt, beside it)")
    p.add_argument("--dtype", choices=("float64", "float32"),
                   help="precision of the imported model (default: the foreign model's own)")
    if side_env:
        p.add_argument("--python", help="interpreter of an existing venv that has the foreign package installed "
                                        "(default: a side environment mlpot creates once in its cache)")


def report(path: Path, meta: dict) -> None:
    print(f"wrote {path}: species {' '.join(meta['species'])}, cutoff {meta['cutoff']} A, interaction range "
          f"{meta['interaction_range']} A, {meta['dtype']}, units {meta['length_unit']}/{meta['energy_unit']}")
