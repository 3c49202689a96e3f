"""``python -m pynetmap.apps.lb ARGS``."""

import sys

from .main import main

sys.exit(main())
