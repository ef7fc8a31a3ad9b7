"""Commands import what they use: `transformer --help` and `transformer translate` load
neither matplotlib (only plot and ablate draw) nor http.server (only serve and explore)."""

import subprocess
import sys

import pytest

HEAVY = ("matplotlib", "http.server")


def loaded_after(code: str) -> set[str]:
    """The HEAVY modules loaded once `code` has run in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("command", ["--help", "translate --help", "train --help"])
def test_help_and_translate_load_no_drawing_and_no_server(command):
    code = ("import contextlib, io\nfrom transformer.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    try:\n        main({command.split()!r})\n    except SystemExit:\n        pass\n"
            "import transformer.cli.translate, transformer.cli.train")
    assert loaded_after(code) == set()


def test_the_check_sees_a_command_that_does_load_them():
    assert loaded_after("import transformer.cli.experiments, transformer.cli.serving") == set(HEAVY)
