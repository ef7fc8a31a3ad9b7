"""`python -m transformer ...` (what torchrun launches) is the `transformer` command."""

import sys

from .cli import main

sys.exit(main())
