"""Running the `transformer` command inside the test process, and its error contract.

The contract for every mistake a user can make: exit code 2 and exactly one line on
stderr, starting with "error: " and naming what is wrong and where (file, line, key),
never a traceback.
"""

from __future__ import annotations

import torch

from transformer.cli import main


def run_main(capsys, args: list) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `transformer ARGS`."""
    torch.set_num_threads(1)
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(code: int, err: str, *names: str) -> str:
    """The contract: exit 2, one line "error: ...", no traceback, naming every `names`."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("error: ")
    for name in names:
        assert str(name) in lines[0], f"{name!r} not named in: {lines[0]}"
    return lines[0]
