"""Console-script entry points: signal handlers first, then the tool's (heavy) module.

Each function is what ``setup.py`` names for one console script. Importing this module costs
nothing, so Ctrl-C or SIGTERM during the seconds of ``import torch`` already ends with 130/143
and one line (see :mod:`ssp_perception.cli`).
"""

from typing import NoReturn

from ssp_perception.cli import entry


def ssp_data() -> NoReturn:
    """Run ``ssp_data``."""
    entry("ssp_data", "ssp_training.data.cli")


def ssp_train() -> NoReturn:
    """Run ``ssp_train``."""
    entry("ssp_train", "ssp_training.train")


def ssp_eval() -> NoReturn:
    """Run ``ssp_eval``."""
    entry("ssp_eval", "ssp_training.evaluate")


def ssp_export() -> NoReturn:
    """Run ``ssp_export``."""
    entry("ssp_export", "ssp_training.export")
