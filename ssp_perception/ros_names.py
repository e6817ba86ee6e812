"""ROS 2 topic names, checked without ROS (the rules of rcl/rmw topic name validation).

A topic name is tokens of ``[A-Za-z0-9_]`` separated by single ``/``; no token starts with a
digit and the name does not end in ``/``. A fully qualified name (what a bag stores) starts
with ``/``; a relative one may start with ``~/`` (private to the node). ``test_ros_names``
checks these rules against rclpy's own validators.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def name_problem(name: str, absolute: bool = False) -> str | None:
    """Return why ``name`` is not a valid ROS 2 topic name, or None if it is valid.

    With ``absolute`` the name must be fully qualified (start with ``/``).
    """
    if not name:
        return "it is empty"
    if absolute and not name.startswith("/"):
        return "it does not start with '/'"
    body = name
    if body.startswith("~"):
        if len(body) > 1 and body[1] != "/":
            return "'~' must be followed by '/'"
        body = body[1:]
        if not body:
            return None
    if body.endswith("/"):
        return "it ends with '/'"
    for token in body.removeprefix("/").split("/"):
        if not token:
            return "it has an empty token ('//')"
        if not _TOKEN.match(token):
            bad = sorted({c for c in token if not (c.isascii() and (c.isalnum() or c == "_"))})
            if bad:
                return f"it contains {''.join(bad)!r} (allowed: letters, digits, '_', '/')"
            return f"token {token!r} starts with a digit"
    return None


def check_topic_name(name: str, what: str = "topic", absolute: bool = False) -> str:
    """Return ``name`` if it is a valid ROS 2 topic name, else raise ``ValueError`` saying why."""
    problem = name_problem(name, absolute)
    if problem is not None:
        raise ValueError(f"{what} {name!r} is not a valid ROS 2 topic name: {problem}")
    return name


__all__ = ["check_topic_name", "name_problem"]
