"""``python -m pyreid ...``: the same as the ``pyreid`` command."""

import sys

from pyreid.cli import main

sys.exit(main())
