"""`python -m transformer ...` (what torchrun launches) is the `transformer` command.

The command line is the top floor, which nothing in the package imports: this entry
point runs it as a program (cli/__main__.py), as the `transformer` script does.
"""

import runpy

runpy.run_module(f"{__package__}.cli", run_name="__main__", alter_sys=True)
