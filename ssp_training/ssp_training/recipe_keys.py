"""``ssp_train keys``: every recipe key with its type, default and one-line doc.

The listing is generated from the recipe dataclasses themselves (their annotations, defaults
and the doc string under each field), so it cannot drift from what the loader accepts.

Example::

    >>> rows = recipe_keys()
    >>> next(r for r in rows if r.key == "optim.lr").default
    '2.5e-05'
"""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass
import inspect
import typing

from . import recipe_sections, recipes


@dataclass(frozen=True)
class KeyDoc:
    """One recipe key."""

    key: str
    """Dotted key as written in overrides (``optim.lr``)."""
    type: str  # noqa: A003 (the column's name in the listing)
    """Type the loader accepts (``float``, ``int``, ``str``, ``bool``, ``list``, ``mapping``)."""
    default: str
    """Default value as YAML would spell it ("required" when there is none)."""
    doc: str
    """The field's one-line doc."""


def _field_docs(cls: type) -> dict[str, str]:
    """Return {field: doc} from the string literal that follows each annotated field."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _type_name(hint: typing.Any) -> str:
    origin = typing.get_origin(hint)
    if origin is tuple:
        return f"list[{_type_name(typing.get_args(hint)[0])}]"
    if origin is not None:
        return "mapping"
    return getattr(hint, "__name__", str(hint))


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if isinstance(value, str):
        return repr(value) if value == "" else value
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return str(list(value))
    return str(value)


def recipe_keys() -> list[KeyDoc]:
    """Return every key of :class:`~ssp_training.recipes.Recipe`, sections expanded."""
    rows = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls, vars(recipe_sections))
        docs = _field_docs(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            if dataclasses.is_dataclass(hint):
                walk(hint, f"{prefix}{f.name}.")
                continue
            rows.append(KeyDoc(f"{prefix}{f.name}", _type_name(hint), _default(f),
                               docs.get(f.name, "")))

    walk(recipes.Recipe, "")
    return rows


def format_keys(rows: list[KeyDoc]) -> str:
    """Return the keys as aligned text: ``key  type  default  doc``."""
    width = max(len(r.key) for r in rows)
    twidth = max(len(r.type) for r in rows)
    dwidth = min(24, max(len(r.default) for r in rows))
    lines = [f"{'key':<{width}}  {'type':<{twidth}}  {'default':<{dwidth}}  doc"]
    for r in rows:
        lines.append(f"{r.key:<{width}}  {r.type:<{twidth}}  {r.default:<{dwidth}}  {r.doc}")
    return "\n".join(lines) + "\n"
