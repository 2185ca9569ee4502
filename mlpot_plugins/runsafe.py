"""Long runs keep their state and never end in a silently wrong number.

* ``check_output(path)``: before the work starts, an output file's folder must exist or be creatable and
  be writable, and the path must not be a folder (``OutputPathError``, naming the path and the fix).
* ``atomic_write(path, write)``: ``write(tmp)`` to a temporary file in the same folder, then
  ``os.replace``: a reader (or a restart after a kill) sees the old file or the new one, never half of one.
* ``StopSignals``: inside ``with StopSignals() as stop:`` SIGINT/SIGTERM only set ``stop.signum``; the
  loop saves its state at the next safe point and raises ``stop.interrupted(...)`` (``RunInterrupted``,
  exit status 128 + signal as a shell reports it).
* ``check_finite(value, what, fix)``: ``DivergenceError`` naming what became NaN/inf and how to fix it.
* ``resume_state(path, kind, config, resume, command)``: the one rule for a resumable command's state
  file: ``--resume`` needs the file, a fresh run refuses to overwrite it, the file must be of ``kind`` and
  hold the same ``config`` (the options that decide the result); clear ``RunError``s otherwise.
"""
from __future__ import annotations

import math
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Callable, Optional


class RunError(RuntimeError):
    """A run stopped with a message for the user (the CLI prints it and exits with ``exit_code``)."""
    exit_code = 2


class DivergenceError(RunError):
    """A simulation or a training produced a non-finite or runaway value."""


class OutputPathError(RunError):
    """An output cannot be written (checked before the work starts)."""


class RunInterrupted(RunError):
    """SIGINT/SIGTERM arrived; the state was saved (the message says where)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum


def check_output(path, what: str = "output") -> Path:
    """Fail now, not after hours of work, if the file ``path`` cannot be written. Creates nothing."""
    path = Path(path)
    if path.is_dir():
        example = path / ("model.pt" if "model" in what else "out.pt")
        raise OutputPathError(f"{what} {path} is a directory; give a file name inside it, e.g. {example}")
    _check_writable_folder(path.parent, path, what)
    return path


def check_output_dir(path, what: str = "output folder") -> Path:
    """Like ``check_output`` for a folder that will receive files."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{what} {path} is a file; give a folder path")
    _check_writable_folder(path, path, what)
    return path


def _check_writable_folder(folder: Path, target: Path, what: str) -> None:
    probe = folder  # the nearest existing ancestor must be a writable folder (missing ones get created)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputPathError(f"cannot write {what} {target}: {probe} is a file, not a folder; choose another "
                              "output path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write {what} {target}: the folder {probe} is not writable; choose a "
                              "writable output path")


def atomic_write(path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def torch_save_atomic(obj, path) -> Path:
    import torch

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: the archive's inner name is fixed, not the random tmp name,
            torch.save(obj, fh)      # so the same object gives the same bytes (resumed == uninterrupted)

    return atomic_write(path, write)


class StopSignals:
    """Turn SIGINT/SIGTERM into a flag for the duration of a ``with`` block (main thread only)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: Optional[int] = None
        self._old = {}

    def _handler(self, signum, frame):
        self.signum = signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}

    def interrupted(self, message: str) -> RunInterrupted:
        return RunInterrupted(f"stopped by {signal.Signals(self.signum).name}; {message}", self.signum)


def check_finite(value: float, what: str, fix: str) -> float:
    """``value`` if finite, else ``DivergenceError("<what> is <value>; <fix>")``."""
    v = float(value)
    if not math.isfinite(v):
        raise DivergenceError(f"{what} is {v}; {fix}")
    return v


def with_defaults(config: dict, later: dict) -> dict:
    """``config`` with each ``later`` option its section lacks set to its default (sections are dicts)."""
    out = dict(config)
    for section, defaults in later.items():
        if isinstance(out.get(section), dict):
            out[section] = {**defaults, **out[section]}
    return out


def resume_state(path, kind: str, config: dict, resume: bool, command: str,
                 later: Optional[dict] = None) -> Optional[dict]:
    """The saved state of an interrupted run to continue (``resume``), or ``None`` for a fresh run.

    ``config`` (plain values) must equal the saved one: a resume with other options would silently mix two
    runs. ``later`` = {section: {option: default}} names options added after a state could have been written:
    a state without one counts as having its default. A fresh run refuses to start while ``path`` holds an
    interrupted run (its work would be lost)."""
    import torch

    path = Path(path)
    if not resume:
        if path.exists():
            raise RunError(f"{path} holds the state of an interrupted `{command}`; rerun the same command with "
                           "--resume to continue it, or delete the file to start afresh")
        return None
    if not path.is_file():
        raise RunError(f"cannot --resume: {path} does not exist (an interrupted `{command}` writes it); run "
                       "without --resume to start afresh")
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign files: zip/pickle errors of every kind
        st = exc
    if not isinstance(st, dict) or st.get("kind") != kind or not isinstance(st.get("config"), dict):
        why = f" ({type(st).__name__})" if isinstance(st, Exception) else ""
        raise RunError(f"{path} is not a readable state file of `{command}`{why}: it is truncated or of another "
                       "kind; delete it and run without --resume to start afresh")
    saved = with_defaults(st["config"], later or {})
    config = with_defaults(config, later or {})
    diff = [f"{k}={saved.get(k)!r} (now {config.get(k)!r})" for k in sorted(set(saved) | set(config))
            if saved.get(k) != config.get(k)]
    if diff:
        raise RunError(f"cannot --resume from {path}: it was written with other options: " + ", ".join(diff) +
                       "; rerun with the interrupted run's options, or delete the file to start afresh")
    return st
