"""The run folder of ``ssp_train fit``: what may start or resume there."""

from __future__ import annotations

from typing import Any

from .distributed import barrier, DistInfo
from .recipes import dump_recipe, load_recipe, Recipe, RecipeError

RECIPE_COPY = "recipe.yaml"
# What a resumed run may change: how it runs and validates, not what it trains.
RESUME_MAY_CHANGE = ("run.threads", "run.device", "run.log_every", "run.plot",
                     "run.keep_resume_state", "data.workers", "val.", "description")
SUMMARY = "summary.json"


def prepare_run_dir(recipe: Recipe, resume: bool, info: DistInfo) -> None:
    """Check ``recipe``'s run folder against ``resume``; create it with the recipe copy."""
    run_dir = recipe.out_dir
    saved = run_dir / RECIPE_COPY
    has_ckpt = (run_dir / "checkpoints" / "latest.json").is_file()
    # A finished run's resume state may be pruned: its summary still marks it.
    finished = (run_dir / SUMMARY).is_file()
    if (has_ckpt or finished) and not resume:
        raise RecipeError(f"run folder {run_dir} already holds a "
                          f"{'finished run' if finished else 'checkpoint'}; pass --resume to "
                          "continue it, or set run.out_dir to a new folder")
    if resume and saved.is_file():
        a, b = _flatten(load_recipe(saved).to_dict()), _flatten(recipe.to_dict())
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)
                      and not k.startswith(RESUME_MAY_CHANGE))
        if diff:
            raise RecipeError(f"--resume with a recipe that differs from {saved} in {diff}; "
                              "resume with the same recipe and overrides")
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_recipe(recipe, saved)
    barrier(info)


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
