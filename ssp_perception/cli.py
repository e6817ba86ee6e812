"""How every command-line tool ends: one line on bad input, one exit status per signal.

The tools of both packages end through :func:`run_main` (``ssp_data``, ``ssp_train``,
``ssp_eval`` and ``ssp_export`` do; the ROS tools are to follow):

- success: status 0, the tool's normal output;
- runtime error: status 1, ``<tool>: error: <reason>``;
- bad input (:class:`UsageError`, a tool's own input errors, argparse errors through
  :class:`ArgumentParser`): status 2, one line ``<tool>: error: <reason>``, never a traceback;
- file-system errors, the same for every tool whatever it lists (:func:`os_error_status`): a
  path the tool may not read or write (``EACCES``, ``EPERM``, ``EROFS``) is bad input, status
  2, naming the path the user gave (not its hidden staging sibling); a full disk or an I/O
  error (``ENOSPC``, ``EDQUOT``, ``EFBIG``, ``EIO``) is a runtime error, status 1; so is a
  standard output that cannot be written (``> /dev/full``, a closed pipe): one line on stderr,
  and stdout is then pointed at ``/dev/null`` so the interpreter's flush at exit adds nothing
  (the Python documentation's advice for ``BrokenPipeError``);
- SIGINT (Ctrl-C): status 130, ``<tool>: interrupted; <what was kept or removed>``;
- SIGTERM (``kill``, CI time limits): status 143, the same line.

Signals: :func:`install_signal_handlers` makes SIGINT and SIGTERM raise :class:`Interrupted`
(a ``KeyboardInterrupt``, so every ``finally`` and :func:`ssp_perception.files.staged_dir`
cleans up) in the main thread. It installs them unconditionally, also when SIGINT was inherited
as ignored (a background job such as ``make test &``): a tool that was sent a signal on purpose
must end the same way wherever it runs. The first signal decides the exit status; further
signals while the cleanup runs are ignored so that the cleanup finishes (a third one ends the
process at once, without cleanup, with the same status). Once the tool's main function has
returned, :func:`entry` turns any late signal into an immediate exit with the status already
decided, so interpreter shutdown can never change it.

rclpy: ``rclpy.init()`` installs its own SIGINT/SIGTERM handlers by default (they shut the
context down instead of raising). A ROS tool either passes
``signal_handler_options=rclpy.signals.SignalHandlerOptions.NO`` to ``rclpy.init`` or calls
:func:`install_signal_handlers` again after it; both leave this module's handlers in charge.

Console scripts point at :func:`entry` through a tiny module, so the handlers are in place
before the heavy imports (torch, cv2, rclpy) start: a signal during start-up ends the same way.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import errno
import importlib
import logging
import os
import re
import signal
import sys
import threading
from typing import NoReturn

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_SIGINT = 128 + signal.SIGINT
EXIT_SIGTERM = 128 + signal.SIGTERM
SIGNALS = (signal.SIGINT, signal.SIGTERM)

Note = str | Callable[[], str]
_QUALIFIED_ERROR = re.compile(r"^[A-Za-z_][\w.]*: ")  # "package.module.SomeError: message"
# ssp_perception.files writes through hidden siblings ".<name>.<kind>-<pid>-<thread>".
_TEMP_SIBLING = re.compile(r"^\.(?P<name>.+)\.(?:staging|tmp|old|partial)-\d+(?:-\d+)?$")
DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)
FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)
STREAM = (*FULL, errno.EPIPE)


class UsageError(ValueError):
    """Bad input to a tool: printed as ``<tool>: error: <message>``, exit status 2."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM received; raised in the main thread by this module's handlers."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line and exit with status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message>`` (with a pointer to ``--help``) and exit 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def non_negative_int(text: str) -> int:
    """Argparse ``type`` of counts and seeds: an integer >= 0 (the error names the flag)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


# The first signal of the process (None until one arrives) and how many arrived since.
_first: int | None = None
_count = 0
_late = False
_tool = ""  # the tool whose main function returned (for a signal that arrives after it)
_running = False  # inside run_main's body: raise_if_interrupted may act


def exit_status(signum: int) -> int:
    """Return the shell convention's exit status for a signal: 128 + its number."""
    return 128 + int(signum)


def _handler(signum: int, _frame: object) -> None:
    global _first, _count
    _count += 1
    if _late or _count >= 3:
        # After main returned (or on the third signal): end now, with the status decided.
        if _first is None and _tool:
            print(f"{_tool}: interrupted after it finished; its output is complete",
                  file=sys.stderr)
        _flush()
        os._exit(exit_status(_first if _first is not None else signum))
    if _first is not None:
        return  # the first signal's cleanup is running: let it finish
    _first = signum
    raise Interrupted(signum)


def raise_if_interrupted() -> None:
    """Raise :class:`Interrupted` again if a signal came whose exception was swallowed.

    The handler raises in whatever the main thread runs at that moment; where that is a
    finaliser or a library that catches everything, Python drops the exception and the work
    goes on. Long loops call this once per item, so such a signal still stops the work at the
    next item instead of letting it run to its end.
    """
    if _running and _first is not None:
        raise Interrupted(_first)


def install_signal_handlers() -> dict[int, object]:
    """Make SIGINT and SIGTERM raise :class:`Interrupted`; return the handlers they replace.

    Call it again after anything that installs its own handlers (``rclpy.init`` with its
    default options). Outside the main thread it does nothing (Python allows signal handlers
    in the main thread only) and returns an empty dict.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}
    if sys.unraisablehook is sys.__unraisablehook__:
        sys.unraisablehook = _unraisable
    return {s: signal.signal(s, _handler) for s in SIGNALS}


def _unraisable(hook_args: object) -> None:
    """Keep quiet about our own signal where Python ignores exceptions (a finaliser, a callback).

    The handler raises :class:`Interrupted` in whatever the main thread runs; inside importlib's
    module-lock callback or a ``__del__`` Python drops it and prints a traceback. The signal is
    already recorded (the tool still ends with its status), so only that print is dropped.
    """
    if isinstance(getattr(hook_args, "exc_value", None), Interrupted):
        return
    sys.__unraisablehook__(hook_args)


def restore_signal_handlers(previous: dict[int, object]) -> None:
    """Put back the handlers :func:`install_signal_handlers` returned."""
    for s, h in previous.items():
        if h is not None:  # None: set from C (rclpy) and not restorable from Python
            signal.signal(s, h)


def _end_progress_bars() -> None:
    """Close progress bars still drawn (tqdm, if loaded) so our line starts on its own line."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ()) or ()):
        # A signal between a bar's first draw and the end of its __init__ leaves it without
        # last_print_t, and tqdm's close() then returns without ending the drawn line.
        # (Drawn there: enabled, its printer made and no start delay.)
        unended = (not getattr(bar, "disable", True) and getattr(bar, "sp", None) is not None
                   and getattr(bar, "delay", 0) <= 0 and not hasattr(bar, "last_print_t"))
        try:
            bar.close()
            if unended:
                bar.fp.write("\n")
        except Exception:  # noqa: BLE001 - a bar that cannot close must not hide the error
            pass


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def one_line(err: BaseException) -> str:
    """Return an exception's message as one line (its type name if it has none).

    An error re-raised from a PyTorch ``DataLoader`` worker carries the worker's whole
    traceback in its message; only the original message (its last line) is kept.
    """
    text = str(err)
    if isinstance(err, KeyError) and len(err.args) == 1:
        text = str(err.args[0])
    if text.startswith("Caught ") and "DataLoader worker" in text and "\nOriginal " in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if _QUALIFIED_ERROR.match(last) else last
    return " ".join(text.split()) or type(err).__name__


def _user_path(path: object) -> str:
    """Return the path a user gave for ``path``: a hidden staging sibling names its destination."""
    text = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
    head, _, name = text.rpartition("/")
    match = _TEMP_SIBLING.match(name)
    if match is None:
        return text
    return f"{head}/{match['name']}" if head or text.startswith("/") else match["name"]


def _silence_stdout() -> None:
    """Flush what stdout can still take, then point it at /dev/null.

    The interpreter flushes stdout at exit; on a stream that failed once (``/dev/full``, a
    closed pipe) that flush fails again and prints ``Exception ignored ...``.
    """
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def os_error_status(err: OSError) -> tuple[int, str] | None:
    """Return (exit status, one-line reason) for a file-system error every tool treats alike.

    Denied access (``EACCES``, ``EPERM``, ``EROFS``) is bad input, status 2, naming the path
    (a staging sibling's destination); a full disk or an I/O error is status 1. A write error
    without a file name (``print`` to a full or closed stdout, or a write to an open file) is
    status 1, and stdout is then pointed at ``/dev/null`` (the buffer a failed flush held is
    gone, so which stream failed cannot be told afterwards). Any other ``OSError`` returns
    None: the tool's own ``usage_errors`` / ``runtime_errors`` decide.
    """
    code = err.errno
    reason = err.strerror or one_line(err)
    if err.filename is None and code in STREAM:
        _silence_stdout()
        return EXIT_ERROR, f"cannot write the output (standard output or a file): {reason}"
    if code not in DENIED and code not in FULL:
        return None
    if err.filename is None:
        return (EXIT_USAGE if code in DENIED else EXIT_ERROR), f"cannot write: {reason}"
    path = _user_path(err.filename)
    if code in DENIED:
        return EXIT_USAGE, (f"{path}: {reason}; give a path this user may read or write "
                            "(outputs go to a folder of your own)")
    return EXIT_ERROR, f"{path}: {reason}"


def run_main(body: Callable[[], int | None], tool: str, *,
             usage_errors: tuple[type[BaseException], ...] = (),
             runtime_errors: tuple[type[BaseException], ...] = (),
             interrupted: Note = "no output written") -> int:
    """Run ``body`` as ``tool``'s main work and return its exit status; print at most one line.

    :class:`UsageError` and ``usage_errors`` give status 2, ``runtime_errors`` status 1, each
    with ``<tool>: error: <message>``; file-system errors first go through
    :func:`os_error_status`, whatever the tool lists. SIGINT/SIGTERM (and
    ``KeyboardInterrupt``) give 130/143
    after ``body``'s own cleanup has run, with ``<tool>: interrupted; <interrupted>``;
    ``interrupted`` may be a function, called then, that says what was kept or removed, and a
    cleanup that knows better may set a ``note`` attribute on the exception, which wins.
    Anything else propagates (a bug: its traceback is wanted). The signal handlers that were in
    place before are restored on return.
    """
    global _first, _count, _running
    _first, _count = None, 0
    previous = install_signal_handlers()
    try:
        try:
            _running = True
            try:
                code = body()
                sys.stdout.flush()   # a full or closed stdout fails here, not at exit
            finally:
                _running = False
        except Interrupted as err:
            return _interrupted(tool, err.signum, getattr(err, "note", None) or interrupted)
        except KeyboardInterrupt as err:
            return _interrupted(tool, _first or signal.SIGINT,
                                getattr(err, "note", None) or interrupted)
        except (UsageError, OSError, *usage_errors, *runtime_errors) as err:
            if _first is not None:
                # The error is the interrupt's doing (raised inside a library and re-wrapped).
                return _interrupted(tool, _first, getattr(err, "note", None) or interrupted)
            known = os_error_status(err) if isinstance(err, OSError) else None
            if known is None and not isinstance(err, (UsageError, *usage_errors,
                                                      *runtime_errors)):
                raise   # an OSError nobody explains: a bug, its traceback is wanted
            _end_progress_bars()
            if known is not None:
                code, text = known
            else:
                text = one_line(err)
                code = EXIT_USAGE if isinstance(err, (UsageError, *usage_errors)) else EXIT_ERROR
            print(f"{tool}: error: {text}", file=sys.stderr, flush=True)
            return code
        if _first is not None:
            # A signal was received but its KeyboardInterrupt was swallowed on the way (a
            # library caught it): the work ran to its end. Still end with the signal's status.
            print(f"{tool}: interrupted; the signal came as it finished, its output is "
                  "complete", file=sys.stderr, flush=True)
            return exit_status(_first)
        return EXIT_OK if code is None else int(code)
    except KeyboardInterrupt:
        # A second signal raced the first one's handling above: the first one decides.
        return exit_status(_first or signal.SIGINT)
    finally:
        restore_signal_handlers(previous)


def _interrupted(tool: str, signum: int, note: Note) -> int:
    try:
        text = note() if callable(note) else note
    except Exception as err:  # noqa: BLE001 - the note must never hide the interrupt
        text = f"(could not say what was kept: {one_line(err)})"
    _end_progress_bars()
    print(f"{tool}: interrupted; {text}", file=sys.stderr, flush=True)
    return exit_status(signum)


def entry(tool: str, module: str, attr: str = "main") -> NoReturn:
    """Console-script body: handlers first, then import ``module`` and exit with its main's status.

    ``module.attr`` is called without arguments and returns an exit status (it should end
    through :func:`run_main`). A signal during the import ends with 130/143 and the line
    ``<tool>: interrupted; nothing was written``.
    """
    global _late, _tool
    try:
        # Inside the try: a signal that lands as soon as the first handler is in place (while
        # the second is being installed) already raises Interrupted.
        install_signal_handlers()
        main = getattr(importlib.import_module(module), attr)
        if _first is not None:
            # The signal came during the import and its exception was swallowed there (in a
            # callback whose exceptions Python ignores, such as importlib's module-lock one):
            # the tool must not start (run_main begins with a clean slate).
            raise Interrupted(_first)
        code = main()
    except KeyboardInterrupt as err:
        signum = err.signum if isinstance(err, Interrupted) else (_first or signal.SIGINT)
        code = _interrupted(tool, signum, "nothing was written")
    except Exception:
        # An interrupt raised inside an extension module's import (torch's) can come out as
        # another exception (ImportError, SystemError): once a signal came, it is the cause.
        if _first is None:
            raise
        code = _interrupted(tool, _first, "nothing was written")
    _tool, _late = tool, True
    if _first is not None:
        # Interrupted: the tool's cleanup has run. Skip the interpreter's finalisation, where
        # extension threads stopped mid-work (torch, onnxruntime) were seen to crash (SIGSEGV
        # after the interrupted line, ~1 in 4 ONNX exports under load), so the status stays
        # the signal's.
        _flush()
        logging.shutdown()
        os._exit(exit_status(_first))
    _flush()
    sys.exit(code)


__all__ = ["ArgumentParser", "EXIT_ERROR", "EXIT_OK", "EXIT_SIGINT", "EXIT_SIGTERM",
           "EXIT_USAGE", "Interrupted", "UsageError", "entry", "exit_status",
           "install_signal_handlers", "non_negative_int", "one_line", "os_error_status",
           "raise_if_interrupted", "restore_signal_handlers", "run_main"]
