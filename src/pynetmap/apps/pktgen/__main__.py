"""``python -m pynetmap.apps.pktgen ARGS``."""

import sys

from .main import main

sys.exit(main())
