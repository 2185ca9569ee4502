"""Process settings every engine applies when it takes a model: the allocator and the torch thread count.

* **Allocator.** glibc serves allocations above its mmap threshold with fresh ``mmap`` pages and gives them
  back on free, and trims the heap top above ``M_TRIM_THRESHOLD``: a model call that makes and frees
  hundreds of MiB of edge tensors then pays page faults and zeroing on every call (2048 Cu atoms, cu-emt:
  2.2-3.1x slower, issue 12). ``tune_malloc`` calls ``mallopt(M_MMAP_MAX, 0)`` and switches heap trimming
  off (``M_TRIM_THRESHOLD`` -1) once per process, so freed tensors stay in the heap and the next call reuses
  them (a 1 GiB threshold still gave back, and re-faulted, ~1.5 GB per step of a 9 GB call at 13.5k atoms).
  The price: the process keeps its peak heap. ``release_memory()`` gives the free part back when a long-lived
  process is done with a big system or model (before it starts `lmp` or another big job beside itself). Opt out
  with ``MLPOT_MALLOC=system`` (also when the glibc ``MALLOC_MMAP_MAX_``/``MALLOC_TRIM_THRESHOLD_`` variables
  are set: yours win). The LAMMPS plugin does the same in C++ (pair_mlpot.cpp, ``tune_malloc``).
* **Threads.** torch's intra-op threads: the ``threads`` argument of the engine, else ``MLPOT_THREADS``,
  else ``OMP_NUM_THREADS``, else 1. On a shared or MPI-packed machine more threads than free cores were
  4-10x slower (issue 12); raise it on an idle many-core node for large systems.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Optional

MALLOC_ENV = "MLPOT_MALLOC"
THREADS_ENV = "MLPOT_THREADS"
GLIBC_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc malloc.h
TRIM_THRESHOLD = -1  # never trim the heap top: the next call needs the same memory (man mallopt)

_malloc_state: Optional[bool] = None
_threads_set = False


def malloc_opt_out() -> Optional[str]:
    """Why the allocator is left alone (None: it is tuned)."""
    value = os.environ.get(MALLOC_ENV, "").strip().lower()
    if value in ("system", "off", "0", "no"):
        return f"{MALLOC_ENV}={os.environ[MALLOC_ENV]}"
    if value not in ("", "tuned", "on", "1", "yes"):
        raise ValueError(f"{MALLOC_ENV}={os.environ[MALLOC_ENV]!r} is not understood; use 'system' (leave glibc's "
                         "malloc settings alone) or unset it (keep freed tensors for the next call)")
    glibc = [name for name in GLIBC_ENV if name in os.environ]
    if glibc:
        return f"{', '.join(glibc)} set"
    if not sys.platform.startswith("linux"):
        return "not Linux"
    return None


def _libc_function(name: str):
    """The C library's function NAME, or None where there is no such library or function (not glibc)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def tune_malloc() -> bool:
    """Once per process: keep freed big tensors in glibc's heap (module docstring). True if applied."""
    global _malloc_state
    opt_out = malloc_opt_out()  # checked on every call: a bad MLPOT_MALLOC is reported, not ignored
    if _malloc_state is None:
        _malloc_state = False
        if opt_out is None:
            mallopt = _libc_function("mallopt")
            if mallopt is None:  # musl and others: no mallopt, nothing to tune
                return False
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _malloc_state = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _malloc_state


def release_memory() -> bool:
    """Give the heap's free memory back to the OS now (glibc ``malloc_trim(0)``; the tuned allocator keeps a
    process's peak heap otherwise). Call it after the last evaluation of a big system or when dropping a model;
    the next big call pays the page faults again. Returns True if memory was given back."""
    import gc

    gc.collect()  # tensors held only by reference cycles (dropped contexts, calculators) are freed first
    trim = _libc_function("malloc_trim")
    if trim is None:  # not glibc: nothing kept on purpose
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(trim(0))


def choose_threads(threads: Optional[int] = None) -> int:
    """torch intra-op threads: ``threads``, else MLPOT_THREADS, else OMP_NUM_THREADS, else 1."""
    import torch

    global _threads_set
    source = "threads"
    if threads is None:
        for env in (THREADS_ENV, "OMP_NUM_THREADS"):
            if os.environ.get(env, "").strip():
                threads, source = os.environ[env].strip(), env
                break
    if threads is None:
        if _threads_set:  # the default once per process: a later engine keeps what the first (or user) chose
            return torch.get_num_threads()
        threads, source = 1, "default"
    try:
        n = int(threads)
        if isinstance(threads, bool) or n < 1 or str(threads).strip() != str(n):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"torch threads {threads!r} (from {source}) must be a whole number >= 1; "
                         f"e.g. threads=1 or {THREADS_ENV}=4") from None
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    _threads_set = True
    return n


def engine_setup(threads: Optional[int] = None) -> None:
    """What an engine calls when it takes a model: allocator (once) and threads."""
    tune_malloc()
    choose_threads(threads)
