"""Run ``python -m ssp_perception.ros.replay`` as ``ssp_replay``."""

from ...cli import entry

entry("ssp_replay", "ssp_perception.ros.replay.cli")
