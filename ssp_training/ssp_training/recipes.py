"""Typed training recipes: frozen dataclasses loaded from YAML, unknown keys are errors.

A recipe file holds the sections ``model``, ``data``, ``loss``, ``optim``, ``val`` and ``run``
plus a ``name``. ``extends: other.yaml`` (a path relative to the file) deep-merges the file over
another recipe, so an ablation states only what it changes. Command-line overrides use dotted
keys (``optim.lr=1e-4``, ``data.root=/data/uavid``) whose values are parsed as YAML scalars;
number fields also take exponents without a dot (``1e-4``), which YAML 1.1 reads as strings.
The sections are the dataclasses of :mod:`ssp_training.recipe_sections`; ``ssp_train keys``
lists every key with its type, default and doc.

Only the shape and internal consistency of a recipe are checked here; whether the dataset,
checkpoints and teacher logits it names exist and agree with it is checked by
``ssp_training.train.preflight`` before any training starts.

Example::

    >>> r = load_recipe("ssp_training/configs/synth_lite_image.yaml",
    ...                 overrides=["optim.lr=1e-3"])        # doctest: +SKIP
    >>> r.optim.lr
    0.001
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
from dataclasses import dataclass, field
import math
from pathlib import Path
import re
import typing
from typing import Any, Mapping

from ssp_perception.config import ModelConfig
from ssp_perception.files import atomic_write_text
import yaml

from .model_kinds import get_model_kind
from .recipe_sections import (_fail, DataRecipe, LossRecipe, ModelRecipe, OptimRecipe,
                              RecipeError, RunRecipe, ValRecipe)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@dataclass(frozen=True)
class Recipe:
    """One training run: model, data, loss, optimiser, validation and run settings."""

    name: str
    """Short name; the default run folder is runs/<name>."""
    data: DataRecipe
    """Dataset section (root and num_classes are required)."""
    model: ModelRecipe = field(default_factory=ModelRecipe)
    """Model section."""
    loss: LossRecipe = field(default_factory=LossRecipe)
    """Loss section."""
    optim: OptimRecipe = field(default_factory=OptimRecipe)
    """Optimiser and schedule section."""
    val: ValRecipe = field(default_factory=ValRecipe)
    """Validation section."""
    run: RunRecipe = field(default_factory=RunRecipe)
    """Run section."""
    description: str = ""
    """One line on what this recipe reproduces."""

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "._-" for c in self.name):
            _fail("name", f"name must be non-empty [A-Za-z0-9._-], got {self.name!r}")
        try:
            kind = get_model_kind(self.model.kind)
        except ValueError as err:
            raise RecipeError(f"recipe model.kind: {err}") from None
        if self.model.options:
            if kind.check_options is None:
                _fail("model", f"options: model kind {kind.name!r} takes none; remove "
                               f"model.options ({sorted(self.model.options)})")
            try:
                kind.check_options(self.model.options)
            except (TypeError, ValueError) as err:
                _fail("model", f"options for {kind.name!r}: {err}")
        video_loss = self.loss.kind in ("ssp", "kd_ssp")
        if video_loss and not kind.video:
            _fail("loss", f"loss {self.loss.kind!r} trains on frame pairs and needs a video "
                          f"model (e.g. model.kind: ssp), not {kind.name!r}; use loss.kind ce "
                          "or kd_image for an image model")
        if self.model.kind == "ssp" and self.loss.kind in ("ce", "kd_image"):
            _fail("loss", f"model.kind ssp is trained with loss.kind ssp or kd_ssp, not "
                          f"{self.loss.kind!r} (λ=0 gives CE only: loss.tc_weight: 0)")
        if self.data.unroll > 1 and (self.model.kind, self.loss.kind) != ("ssp", "ssp"):
            _fail("data", f"unroll {self.data.unroll} trains model.kind ssp with loss.kind ssp "
                          f"only, not {self.model.kind} with {self.loss.kind}; use unroll 1")
        if self.loss.uses_teacher and not self.data.teacher_logits:
            _fail("data", f"loss {self.loss.kind!r} needs data.teacher_logits (the folder "
                          "written by 'ssp_train export-logits')")
        # Resolving the model config validates the preset overrides against the data.
        self.model_config()

    def model_config(self) -> ModelConfig:
        """Return the resolved ``ModelConfig`` (classes and input size from the data section)."""
        size = self.data.size
        return self.model.model_config(self.data.num_classes, (size[0], size[1]))

    @property
    def out_dir(self) -> Path:
        """Return the run folder."""
        return Path(self.run.out_dir or f"runs/{self.name}")

    def to_dict(self) -> dict[str, Any]:
        """Return the plain-YAML form (tuples as lists); ``recipe_from_dict`` inverts it."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping, recursing into nested sections."""
    if not isinstance(data, Mapping):
        raise RecipeError(f"recipe {where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise RecipeError(f"recipe {where}: unknown key(s) {unknown}; allowed: "
                          f"{sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}" if where else name)
    missing = [n for n, f in fields.items() if n not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise RecipeError(f"recipe {where or 'top level'}: missing required key(s) {missing}")
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise RecipeError(f"recipe {where}: {err}") from None


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Check ``value`` against the field type ``hint`` (YAML gives ints for floats etc.)."""
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    origin = typing.get_origin(hint)
    if hint is float:
        if isinstance(value, str):
            value = _number(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"recipe {where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise RecipeError(f"recipe {where}: expected a finite number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"recipe {where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"recipe {where}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise RecipeError(f"recipe {where}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"recipe {where}: expected a list, got {value!r}")
        item = typing.get_args(hint)[0]
        return tuple(_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (collections.abc.Mapping, dict):
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise RecipeError(f"recipe {where}: expected a mapping, got {value!r}")
        return dict(value)
    raise TypeError(f"recipe field {where} has a type the loader does not handle: {hint}")


def _number(text: str) -> float | str:
    """Return ``text`` as a float when it spells one (``1e-4``), else ``text`` unchanged.

    PyYAML follows YAML 1.1, where ``1e-4`` (no dot) is a string; YAML 1.2 and every user read
    it as a number, so recipes and overrides accept it.
    """
    if not _FLOAT_RE.fullmatch(text.strip()):
        return text
    return float(text)


def recipe_from_dict(data: Mapping[str, Any]) -> Recipe:
    """Return a validated :class:`Recipe` from a plain mapping (unknown keys are errors)."""
    return _build(Recipe, data, "")


def _deep_merge(base: dict, over: Mapping) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_recipe_dict(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Return the raw mapping of a recipe file with its ``extends`` chain merged in."""
    path = Path(path).resolve()
    if not path.is_file():
        raise RecipeError(f"recipe file {path} not found (shipped recipes live in {CONFIG_DIR})")
    if path in _seen:
        raise RecipeError(f"recipe {path}: 'extends' loops back to itself")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise RecipeError(f"recipe {path}: not UTF-8 text ({err.reason} at byte {err.start}); "
                          "save it as UTF-8") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise RecipeError(f"recipe {path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path}: expected a mapping at the top level")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise RecipeError(f"recipe {path}: extends must be a file name, got {parent!r}")
    base = read_recipe_dict(path.parent / parent, _seen + (path,))
    return _deep_merge(base, data)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return ``data`` with dotted ``key=value`` overrides applied (values parsed as YAML)."""
    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"override {item!r} must look like section.key=value "
                              "(e.g. optim.lr=1e-4)")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as err:
            raise RecipeError(f"override {item!r}: value is not valid YAML: {err}") from None
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return out


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Return the validated recipe in ``path`` with ``overrides`` applied."""
    data = apply_overrides(read_recipe_dict(path), list(overrides or []))
    return recipe_from_dict(data)


def shipped_recipes() -> list[Path]:
    """Return every recipe file shipped under ``ssp_training/configs``."""
    return sorted(CONFIG_DIR.glob("*.yaml"))


def dump_recipe(recipe: Recipe, path: str | Path) -> None:
    """Write the resolved recipe as YAML, atomically and readable by all (0644)."""
    atomic_write_text(path, yaml.safe_dump(recipe.to_dict(), sort_keys=False))
