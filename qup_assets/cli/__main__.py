"""`python -m qup_assets.cli`: the same as `qup`."""

import sys

from qup_assets.cli import main

sys.exit(main())
