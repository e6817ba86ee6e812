"""Progress bars of every tool: redrawn on a terminal, plain lines in a log.

On a terminal a tqdm bar redraws itself in place with carriage returns. Written to a file, a
pipe, CI or ``nohup`` those redraws pile up into one line: an epoch of ``ssp_train fit`` logged
to a file was a single line of 24,000 characters, unreadable with ``less``, ``grep`` or a CI
log viewer. So :func:`progress_bar` makes the bar of the stream it draws on:

- a terminal: tqdm as usual;
- anything else: one plain line when the bar starts, then at most one every
  :data:`LOG_INTERVAL_S` seconds, and the final state when it ends (a bar that clears itself on
  closing, ``leave=False``, writes no final line). ``TQDM_MININTERVAL`` in the environment
  (seconds) sets the interval instead.

Every tool draws its bars through this function; the arguments are tqdm's.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from tqdm import tqdm

#: Seconds between two progress lines when the bar's stream is not a terminal.
LOG_INTERVAL_S = 30.0


class _Lines:
    """A text stream for tqdm that turns each redraw into a line of its own."""

    def __init__(self, stream: TextIO):
        self._stream = stream
        self._ended = True   # whether the stream's last character is a newline we wrote
        self._last = ""      # the count part of the last line drawn ("epoch 1/2: 100%|...| 9/9")

    def write(self, text: str) -> int:
        if text.startswith("\r"):          # a redraw: the bar's new state, or spaces to clear it
            line = text.strip("\r").rstrip()
            count = line.split(" [", 1)[0]
            if line and count != self._last:  # close() draws the final state once more
                self._stream.write(("" if self._ended else "\n") + line + "\n")
                self._ended, self._last = True, count
        elif text == "\n" and self._ended:  # the newline tqdm ends its last redraw with
            pass
        elif text:                          # anything else (tqdm.write): as it is
            self._stream.write(text)
            self._ended, self._last = text.endswith("\n"), ""
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    @property
    def encoding(self) -> str | None:
        return getattr(self._stream, "encoding", None)


def _log_interval() -> float:
    try:
        seconds = float(os.environ.get("TQDM_MININTERVAL", LOG_INTERVAL_S))
    except ValueError:
        return LOG_INTERVAL_S
    return seconds if seconds >= 0 else LOG_INTERVAL_S


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):   # no isatty, or a closed stream
        return False


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """Make a tqdm bar (same arguments) that draws on ``file`` (default stderr) as it suits."""
    stream = kwargs.get("file") or sys.stderr
    if not kwargs.get("disable") and not _is_terminal(stream):
        kwargs["file"] = _Lines(stream)
        kwargs["mininterval"] = _log_interval()
        # Fixed miniters: every update compares the clock, and tqdm's monitor thread (which
        # redraws bars whose dynamic miniters grew) leaves the bar alone, so no second line
        # a moment after the first.
        kwargs["miniters"] = 1
        kwargs.pop("dynamic_ncols", None)   # no terminal to measure
    return tqdm(iterable, **kwargs)
