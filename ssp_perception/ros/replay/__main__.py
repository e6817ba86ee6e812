"""Run ``python -m ssp_perception.ros.replay`` as ``ssp_replay``."""

import sys

from .cli import main

sys.exit(main())
