"""``mlpot import mace MODEL.model``: a MACE model (mace-torch .model file) into one mlpot model file.

mace-torch pins e3nn 0.4.4, which conflicts with ours, so the conversion runs in a side environment
(:mod:`.side_env`); the output is TorchScript and needs nothing but torch.
"""
from __future__ import annotations

import sys
import zipfile
from pathlib import Path
from typing import Callable, Optional

from .side_env import (SideEnv, SideEnvError, add_common_arguments, check_dtype, find_python, import_paths,
                       report, run_converter)

MACE_VERSION = "0.3.16"
REQUIREMENTS = (f"mace-torch=={MACE_VERSION}", "e3nn==0.4.4")
CHECK = ("import mace, e3nn, torch; assert e3nn.__version__ == '0.4.4', "
         "f'e3nn {e3nn.__version__} shadows 0.4.4: the side env site-packages must come first'")


def side_env(progress: Optional[Callable[[str], None]] = None) -> SideEnv:
    kwargs = {"progress": progress} if progress else {}
    return SideEnv(f"mace-{MACE_VERSION}", REQUIREMENTS, CHECK, **kwargs)


def _check_mace_file(src: Path) -> None:
    """Cheap checks in the main env, so a wrong file fails before any side environment is made."""
    if not zipfile.is_zipfile(src):
        raise ValueError(f"{src}: not a MACE model file (not a torch.save zip archive). Give the .model file "
                         "written by mace_run_train")
    with zipfile.ZipFile(src) as z:
        names = z.namelist()
    if any(n.split("/", 2)[1:2] == ["code"] for n in names if "/" in n):
        raise ValueError(f"{src}: a TorchScript archive, not a MACE .model file (compiled MACE models, e.g. "
                         "for LAMMPS, cannot be imported). Give the .model file written by mace_run_train; "
                         "if it is already an mlpot model, use it directly")


def import_mace(model, output=None, dtype: Optional[str] = None, head: Optional[str] = None,
                python: Optional[str] = None, progress: Optional[Callable[[str], None]] = None) -> Path:
    """Convert a MACE ``.model`` file; returns the path of the written mlpot model file."""
    src, dst = import_paths(model, output, "MACE")
    check_dtype(dtype)
    _check_mace_file(src)
    py = find_python(python, side_env(progress))
    reply = run_converter(py, "mlpot_plugins.importers._mace_convert",
                          [str(src), str(dst), dtype or "", head or ""], f"importing {src}")
    from ..model_file import load

    load(dst)  # the file must load here, in the main env, where mace is not installed
    report(dst, reply["metadata"])
    return dst


def _cmd(args) -> int:
    try:
        import_mace(args.model, args.output, args.dtype, args.head, args.python)
    except SideEnvError as exc:
        print(f"mlpot import mace: error: {exc}", file=sys.stderr)
        return 2
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("mace", help="convert a MACE .model file (mace-torch) into an mlpot model file")
    p.add_argument("model", help="the .model file written by mace_run_train")
    add_common_arguments(p)
    p.add_argument("--head", help="head of a multi-head model (default: the only head, or 'default')")
    p.set_defaults(func=_cmd)
