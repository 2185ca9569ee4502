"""Running the `mlpot` command line in-process for the bad-input suites (fast: no interpreter start)."""
from mlpot_plugins.cli import main


def run_cli(argv, capsys):
    """mlpot in-process -> (exit status, stderr); argparse errors arrive as SystemExit."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err
