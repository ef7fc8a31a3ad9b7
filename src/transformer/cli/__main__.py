"""`python -m transformer.cli ...` (and `python -m transformer ...`): the `transformer` command."""

import sys

from .main import main

sys.exit(main())
