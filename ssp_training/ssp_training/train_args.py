"""The ``ssp_train`` command line: its arguments and what an interrupt of each command leaves."""

from __future__ import annotations

import argparse

from ssp_perception.cli import ArgumentParser

DESCRIPTION = ("``ssp_train``: train image, SSP, KD and baseline models from a recipe; export "
               "teacher logits.")


def build_parser() -> argparse.ArgumentParser:
    """Return the ``ssp_train`` argument parser."""
    p = ArgumentParser(prog="ssp_train", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="train a model from a recipe")
    f.add_argument("--recipe", required=True, help="recipe YAML (ssp_training/configs/*.yaml)")
    f.add_argument("--resume", action="store_true",
                   help="continue the run in run.out_dir from its latest checkpoint")
    f.add_argument("overrides", nargs="*",
                   help="dotted recipe overrides, e.g. optim.lr=1e-4 (every key with its type, "
                        "default and doc: 'ssp_train keys')")
    c = sub.add_parser("check", help="load a recipe and run the preflight checks only")
    c.add_argument("--recipe", required=True, help="recipe YAML")
    c.add_argument("overrides", nargs="*", help="dotted recipe overrides")
    from .logits import add_export_arguments
    add_export_arguments(sub.add_parser(
        "export-logits", help="run a teacher over every training frame and store its logits"))
    sub.add_parser("keys", help="list every recipe key with its type, default and doc")
    from .pipeline import add_pipeline_arguments
    add_pipeline_arguments(sub.add_parser(
        "pipeline", help="run every stage of the paper's table in order, then merge the tables"))
    return p


# What an interrupt leaves, per command (fit's run folder says more once it is set up).
_INTERRUPTED = {"fit": "nothing written (the run had not started)",
                "export-logits": "finished frames are kept; rerun the same command to resume",
                "pipeline": "finished stages are kept; rerun the same command to resume"}


def interrupted_note(command: str) -> str:
    """Return what an interrupt of ``command`` leaves behind, for the ``interrupted`` line."""
    return _INTERRUPTED.get(command, "nothing written")
