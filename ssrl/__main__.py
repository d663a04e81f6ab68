"""``python -m ssrl ...`` is the ``ssrl`` command."""

import sys

from ssrl.cli import main

sys.exit(main())
