"""Bad inputs of `mlpot learn`: each config case asserts exit status 2 with the CLI's error line (never a
traceback) and the words naming the problem and the fix; state-file cases for --resume."""
import pytest

from cli_util import run_cli
from learn_util import check_bad_config, learn_folder, put, write_learn_config


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = learn_folder(tmp_path_factory.mktemp("bl"))
    from ase.build import bulk

    from mlpot_plugins.refdata import write

    cluster = bulk("Cu", "fcc", a=3.61, cubic=True)
    cluster.pbc = False
    write(folder / "cluster.extxyz", [cluster])
    return folder


def drop(section):
    return lambda c: c.pop(section)


# (change to the tiny config, or raw text; words of the message)
CASES = [
    ("reference: [emt\n", ["not valid YAML", "line 2", "fix the syntax", "docs/learn.md"]),
    (lambda c: c.update(explorer={}), ["unknown config section", "explorer", "valid"]),
    (drop("reference"), ["reference section is missing", "calculator: emt"]),
    (put("reference", "calculator", "dft"), ["reference.calculator='dft' is not known", "emt, xtb", "module:Class"]),
    (put("reference", "calculator", "no_such_module:Calc"), ["cannot be imported", "no_such_module"]),
    (put("reference", "calculator", "ase.calculators.emt:NoSuch"), ["has no class 'NoSuch'", "fix the name"]),
    (put("reference", "options", {"bogus": 1}), ["reference.options ['bogus'] are not options of 'emt'",
                                                  "asap_cutoff", "fix the options"]),
    (put("reference", "calculator", "ase.calculators.singlepoint:SinglePointCalculator"),
     ["do not fit", "fix the options"]),
    (lambda c: c.update(reference={"calculator": "xtb", "options": {"accuracy": "fine"}}),
     ["do not fit", "fix the options"]),
    (put("reference", "method", "x"), ["unknown reference option", "method"]),
    (put("explore", "engine", "gromacs"), ["explore.engine='gromacs'", "['ase', 'lammps', 'openmm']"]),
    (put("explore", "walkerz", 2), ["unknown explore option", "walkerz", "valid"]),
    (put("explore", "steps", 0), ["explore.steps=0", "positive"]),
    (put("explore", "temperatures", [300, -5]), ["explore.temperatures", "positive number"]),
    (put("explore", "temperatures", "hot"), ["explore.temperatures", "kelvin"]),
    (put("explore", "check_every", 50), ["check_every=50", "larger than explore.steps", "lower check_every"]),
    (put("explore", "start", "missing.extxyz"), ["explore.start", "does not exist", "starting structures"]),
    (put("explore", "strain", 0.7), ["explore.strain=0.7", "[0, 0.5)"]),
    (put("explore", "stop_after", -2), ["explore.stop_after=-2"]),
    (put("explore", "stop_after", 2.5), ["explore.stop_after=2.5"]),
    (lambda c: c["explore"].update(engine="lammps", start="cluster.extxyz"),
     ["engine lammps needs periodic start structures", "[0]", "use engine ase or openmm"]),
    (put("select", "mode", "bald"), ["select.mode='bald'", "threshold", "topk", "random"]),
    (put("select", "score", "entropy"), ["select.score='entropy'", "max", "bald"]),
    (put("select", "balance", "temperature"), ["select.balance='temperature'", "none", "walkers"]),
    (put("select", "threshold", 0), ["select.threshold=0", "must be a finite number > 0"]),
    (put("select", "threshold", "high"), ["select.threshold='high' is not a number"]),
    (put("select", "max_sigma", 1e-5), ["select.max_sigma", "must exceed select.threshold"]),
    (put("select", "per_iteration", -1), ["select.per_iteration=-1"]),
    (put("stop", "label_budget", 0), ["stop.label_budget=0", "positive"]),
    (put("stop", "patience", 3), ["unknown stop option", "patience"]),
    (put("model", "ensemble_size", 1), ["ensemble_size must be >= 2", "committee"]),
    (put("model", "width", 3), ["unknown model option", "width"]),
    (put("data", "train", "nope.extxyz"), ["nope.extxyz", "does not exist"]),
    (lambda c: c.update(select=[1]), ["section 'select' must be a mapping"]),
]


@pytest.mark.parametrize("change,words", CASES, ids=[str(i) for i in range(len(CASES))])
def test_bad_config_is_a_clear_error(folder, capsys, change, words, request):
    check_bad_config(folder, capsys, change, words, f"run-{request.node.callspec.id}")


def test_missing_and_folder_config(folder, capsys):
    code, err = run_cli(["learn", folder / "absent.yaml"], capsys)
    assert code == 2 and "learn config" in err and "does not exist" in err
    code, err = run_cli(["learn", folder], capsys)
    assert code == 2 and "is a directory" in err and "YAML file inside it" in err


def test_resume_without_state_and_corrupt_state(tmp_path, capsys):
    folder = learn_folder(tmp_path)
    cfg = write_learn_config(folder)
    code, err = run_cli(["learn", cfg, "--resume"], capsys)
    assert code == 2 and "cannot --resume" in err and "run without --resume" in err
    (folder / "run").mkdir()
    (folder / "run" / "learn_state.pt").write_bytes(b"PK\x03\x04 truncated")
    code, err = run_cli(["learn", cfg], capsys)
    assert code == 2 and "holds the state of an interrupted `mlpot learn`" in err and "--resume" in err
    code, err = run_cli(["learn", cfg, "--resume"], capsys)
    assert code == 2 and "not a readable state file" in err and "delete it" in err


def test_shipped_example_config_is_valid(tmp_path):
    """examples/learn_cu_emt.yaml validates (with stand-in data files next to it)."""
    import shutil
    from pathlib import Path

    from mlpot_plugins.learn.config import load_learn_config

    example = Path(__file__).resolve().parents[1] / "examples" / "learn_cu_emt.yaml"
    shutil.copy(example, tmp_path / "learn.yaml")
    learn_folder(tmp_path)
    for name in ("cu-emt-train", "cu-emt-ood-hot", "cu-emt-ood-compressed"):
        shutil.copy(tmp_path / "init.extxyz", tmp_path / f"{name}.extxyz")
    cfg = load_learn_config(tmp_path / "learn.yaml")
    assert cfg["explore"]["engine"] == "ase" and cfg["select"]["threshold"] == 0.15
    assert cfg["explore"]["start"] == str(tmp_path / "cu-emt-train.extxyz")
