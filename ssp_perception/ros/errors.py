"""The error ssp_node reports when it cannot start or configure (one line, no traceback)."""


class StartupError(RuntimeError):
    """Raise when the node cannot start: bad parameters or an unusable model file."""
