"""Every bad input to pair_style mlpot / compute mlpot/atom ends a real `lmp` run with an ERROR: line
that names the problem (never a crash or a hang), also on two MPI ranks."""
import zipfile

import pytest

from lammps_util import cuau, plugin, run_lmp, write_data  # noqa: F401
from mlpot_plugins import pretrained_path

MODEL = str(pretrained_path("morse-cuau"))


def run_bad(tmp_path, plugin, pair_style, pair_coeff="pair_coeff * * Cu Au", units="metal", before="",
            after="run 0", nprocs=1):
    write_data(tmp_path / "system.data", cuau((2, 2, 2)))
    deck = f"""units {units}
{before}
atom_style atomic
atom_modify map array
plugin load {plugin}
read_data system.data
pair_style {pair_style}
{pair_coeff}
{after}
"""
    res = run_lmp(deck, tmp_path, nprocs=nprocs, check=False, timeout=60)
    errors = [line for line in (res.stdout + res.stderr).splitlines() if line.startswith("ERROR")]
    assert res.returncode != 0 and errors, f"no ERROR line:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    assert "Segmentation" not in res.stderr and "signal" not in res.stderr.lower()
    return errors[0]


def test_missing_model_file(tmp_path, plugin):
    err = run_bad(tmp_path, plugin, f"mlpot {tmp_path}/nowhere.pt")
    assert "nowhere.pt" in err and "does not exist" in err


def test_corrupt_model_not_a_zip(tmp_path, plugin):
    (tmp_path / "junk.pt").write_bytes(b"this is not a model" * 10)
    err = run_bad(tmp_path, plugin, f"mlpot {tmp_path}/junk.pt")
    assert "junk.pt" in err and "corrupt" in err and "not a zip" in err


def test_corrupt_model_truncated_archive(tmp_path, plugin):
    data = open(MODEL, "rb").read()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    err = run_bad(tmp_path, plugin, f"mlpot {tmp_path}/cut.pt")
    assert "cut.pt" in err and "corrupt" in err


def test_archive_without_metadata(tmp_path, plugin):
    src, dst = zipfile.ZipFile(MODEL), tmp_path / "nometa.pt"
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as out:
        for item in src.infolist():
            if not item.filename.endswith("extra/metadata.json"):
                out.writestr(item, src.read(item.filename))
    err = run_bad(tmp_path, plugin, f"mlpot {dst}")
    assert "nometa.pt" in err and ("metadata.json" in err or "corrupt" in err)


def test_element_not_in_model(tmp_path, plugin):
    err = run_bad(tmp_path, plugin, f"mlpot {MODEL}", "pair_coeff * * Cu Ag")
    assert "element Ag" in err and "atom type 2" in err and "Cu Au" in err


def test_wrong_number_of_elements(tmp_path, plugin):
    err = run_bad(tmp_path, plugin, f"mlpot {MODEL}", "pair_coeff * * Cu")
    assert "needs 2 element names" in err and "got 1" in err


def test_newton_pair_off_on_two_ranks(tmp_path, plugin):
    err = run_bad(tmp_path, plugin, f"mlpot {MODEL}", before="newton off", nprocs=2)
    assert "newton_pair on" in err


@pytest.mark.parametrize("units", ["lj", "si", "electron"])
def test_unsupported_units(tmp_path, plugin, units):
    err = run_bad(tmp_path, plugin, f"mlpot {MODEL}", units=units)
    assert f"units {units}" in err and "metal, real" in err


def test_device_cuda_without_gpu(tmp_path, plugin):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the error path cannot be exercised")
    err = run_bad(tmp_path, plugin, f"mlpot {MODEL} device cuda")
    assert "CUDA is not available" in err and "device cpu" in err


def test_unknown_option(tmp_path, plugin):
    err = run_bad(tmp_path, plugin, f"mlpot {MODEL} uncertainty often")
    assert "uncertainty" in err


def test_uncertainty_needs_a_committee(tmp_path, plugin):
    err = run_bad(tmp_path, plugin, f"mlpot {MODEL}", after="compute u all mlpot/atom\ndump d all custom 1 d.txt id c_u[1]\nrun 0")
    assert "committee" in err
    err = run_bad(tmp_path, plugin, f"mlpot {MODEL} model_devi devi.out every 10")
    assert "committee" in err and "ensemble_size 1" in err


def test_compute_without_pair_style_mlpot(tmp_path, plugin):
    err = run_bad(tmp_path, plugin, "zero 6.0", "pair_coeff * *",
                  after="compute u all mlpot/atom\ndump d all custom 1 d.txt id c_u[1]\nrun 0")
    assert "requires pair_style mlpot" in err
