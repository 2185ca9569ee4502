"""Running the `mlpot` command line in-process for the bad-input suites (fast: no interpreter start)."""
from mlpot_plugins.cli import main


def run_cli(argv, capsys):
    """mlpot in-process -> (exit status, stderr); argparse errors arrive as SystemExit."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def assert_clear_error(argv, capsys, command: str, words):
    """``mlpot COMMAND ...`` exits with status 2 and one error line (no traceback) holding every word."""
    code, err = run_cli(argv, capsys)
    assert code == 2, err
    assert "Traceback" not in err and err.startswith(f"mlpot {command}: error:"), err
    for w in words:
        assert w in err, (w, err)
    return err
