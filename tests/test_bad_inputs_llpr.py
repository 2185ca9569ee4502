"""Bad inputs of `mlpot llpr`: each gives exit status 2 and a message naming the problem and the fix."""
import ase.io
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT

from cli_util import run_cli
from mlpot_plugins import export, load
from mlpot_plugins.llpr import LastLayerUncertainty, single_model
from mlpot_plugins.refdata import label


def frames(symbol="Cu", n=2, labelled=True):
    out = []
    for k in range(n):
        atoms = bulk(symbol, "fcc", a=3.61, cubic=True).repeat(2)
        atoms.rattle(0.05, seed=k)
        out.append(label(atoms, EMT()) if labelled else atoms)
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("llpr-bad")
    ase.io.write(d / "train.extxyz", frames())
    ase.io.write(d / "val.extxyz", frames())
    ase.io.write(d / "unlabelled.extxyz", frames(labelled=False))
    ase.io.write(d / "gold.extxyz", frames("Au"))
    (d / "empty.extxyz").write_text("")
    committee = load("cu-emt")
    base = single_model(committee, 0)
    export(LastLayerUncertainty(base, torch.eye(base.readout2.shape[1], dtype=torch.float64), readout_gradient=False),
           d / "llpr.pt", extra={"uncertainty": "llpr", "hparams": committee.metadata["extra"]["hparams"]})
    return d


CASES = {  # id: (argv with {d} for the data folder, key words of the message)
    "training data missing": (["cu-emt", "--member", "0", "--data", "{d}/nothere.extxyz"],
                              ["nothere.extxyz", "does not exist", "mlpot data emt"]),
    "training data empty": (["cu-emt", "--member", "0", "--data", "{d}/empty.extxyz"], ["empty.extxyz"]),
    "lattice model": (["holstein-d4", "--data", "{d}/train.extxyz"], ["lattice", "atomistic equivariant"]),
    "committee where single expected": (["cu-emt", "--data", "{d}/train.extxyz"],
                                        ["committee (ensemble_size 4)", "--member 0..3"]),
    "member out of range": (["cu-emt", "--member", "7", "--data", "{d}/train.extxyz"],
                            ["--member 7 does not exist", "0..3"]),
    "not an equivariant model": (["morse-cuau", "--data", "{d}/train.extxyz"],
                                 ["not an mlpot equivariant model", "mlpot train"]),
    "already an LLPR model": (["{d}/llpr.pt", "--data", "{d}/train.extxyz"], ["already carries", "base model"]),
    "validation set without labels": (["cu-emt", "--member", "0", "--data", "{d}/train.extxyz", "--val",
                                       "{d}/unlabelled.extxyz"], ["structure 0 has no reference energy/forces",
                                                                  "calculator attached"]),
    "training data of another element": (["cu-emt", "--member", "0", "--data", "{d}/gold.extxyz"], ["gold.extxyz: structure 0", "['Au']", "use a model trained for them"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_names_problem_and_fix(case, data, capsys, tmp_path):
    argv, words = CASES[case]
    argv = [a.format(d=data) for a in argv]
    if "--val" not in argv:
        argv += ["--val", str(data / "val.extxyz")]
    code, err = run_cli(["llpr", *argv, "-o", str(tmp_path / "out.pt")], capsys)
    assert code == 2, err
    assert err.startswith("mlpot llpr: error:"), err
    for w in words:
        assert w in err, (w, err)
    assert not (tmp_path / "out.pt").exists()


def test_negative_member_is_an_argument_error(data, capsys, tmp_path):
    code, err = run_cli(["llpr", "cu-emt", "--member", "-1", "--data", data / "train.extxyz", "--val",
                         data / "val.extxyz", "-o", tmp_path / "o.pt"], capsys)
    assert code == 2 and "--member" in err


def test_pseudo_committee_needs_a_single_base():
    committee = load("cu-emt")
    hp = dict(committee.metadata["extra"]["hparams"], species=["Cu"], dtype="float64")
    from mlpot_plugins.models.equivariant import EquivariantPotential

    with pytest.raises(ValueError, match=r"single model \(ensemble_size 1\), got ensemble_size 4"):
        LastLayerUncertainty(EquivariantPotential(**hp), torch.eye(12, dtype=torch.float64))
