"""ssp_perception.cli: one error line, one exit status per signal, cleanup before the exit."""

import os
from pathlib import Path
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from ssp_perception.cli import (EXIT_SIGINT, EXIT_SIGTERM, EXIT_USAGE, run_main,
                                UsageError)
import torch
from tqdm import tqdm

# A tool whose work waits for the test, and whose cleanup can be held open by the test.
TOOL = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from ssp_perception.cli import run_main

    d = Path(sys.argv[1])

    def wait_for(name):
        while not (d / name).exists():
            time.sleep(0.01)

    def body():
        try:
            (d / "working").touch()
            wait_for("never")
        finally:
            (d / "cleaning").touch()
            if (d / "hold_cleanup").exists():
                wait_for("release")
            (d / "cleaned").touch()

    sys.exit(run_main(body, "demo_tool", interrupted="scratch removed"))
""")


def wait_until(condition, timeout: float = 60.0) -> None:
    """Poll ``condition`` until it holds (a real condition, never a bare sleep)."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.01)


def _start(tmp_path: Path, inherit_ignored: bool) -> subprocess.Popen:
    def ignore_sigint() -> None:  # what a background job (make test &) inherits
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    return subprocess.Popen([sys.executable, "-c", TOOL, str(tmp_path)],
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=ignore_sigint if inherit_ignored else None)


@pytest.mark.parametrize("inherit_ignored", [False, True], ids=["foreground", "background"])
@pytest.mark.parametrize("sig,status", [(signal.SIGINT, EXIT_SIGINT),
                                        (signal.SIGTERM, EXIT_SIGTERM)], ids=["INT", "TERM"])
def test_signal_gives_its_status_after_cleanup(tmp_path, sig, status, inherit_ignored):
    proc = _start(tmp_path, inherit_ignored)
    wait_until(lambda: (tmp_path / "working").exists())
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status
    assert (tmp_path / "cleaned").exists()
    assert err == "demo_tool: interrupted; scratch removed\n"


def test_second_signal_during_cleanup_neither_stops_it_nor_changes_the_status(tmp_path):
    (tmp_path / "hold_cleanup").touch()
    proc = _start(tmp_path, inherit_ignored=True)
    wait_until(lambda: (tmp_path / "working").exists())
    proc.send_signal(signal.SIGINT)
    wait_until(lambda: (tmp_path / "cleaning").exists())
    proc.send_signal(signal.SIGTERM)
    # The second signal is handled (ignored) once the main thread runs Python code again; the
    # cleanup then goes on when released.
    (tmp_path / "release").touch()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_SIGINT
    assert (tmp_path / "cleaned").exists()
    assert err.count("interrupted") == 1


# rclpy.init() installs its own SIGINT/SIGTERM handlers by default (they shut the context
# down); a ROS tool either asks for none or reinstalls ours after init. Both must hold.
ROS_TOOL = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import rclpy
    from rclpy.signals import SignalHandlerOptions
    from ssp_perception.cli import install_signal_handlers, run_main

    d, mode = Path(sys.argv[1]), sys.argv[2]

    def body():
        context = rclpy.Context()
        if mode == "no_handlers":
            rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
        else:
            rclpy.init(context=context)
            install_signal_handlers()
        try:
            (d / "working").touch()
            while True:
                time.sleep(0.01)
        finally:
            rclpy.shutdown(context=context)
            (d / "cleaned").touch()

    sys.exit(run_main(body, "ros_tool", interrupted="context shut down"))
""")


@pytest.mark.parametrize("mode", ["no_handlers", "reinstalled"])
@pytest.mark.parametrize("sig,status", [(signal.SIGINT, EXIT_SIGINT),
                                        (signal.SIGTERM, EXIT_SIGTERM)], ids=["INT", "TERM"])
def test_rclpy_handlers_do_not_change_the_status(tmp_path, mode, sig, status):
    proc = subprocess.Popen([sys.executable, "-c", ROS_TOOL, str(tmp_path), mode],
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    wait_until(lambda: (tmp_path / "working").exists())
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert (tmp_path / "cleaned").exists()
    assert err.endswith("ros_tool: interrupted; context shut down\n"), err


def test_interrupt_during_a_progress_bars_first_draw_still_starts_its_own_line(capsys):
    class InterruptedAfterFirstDraw(tqdm):
        # Where a signal landed in a CI run: after tqdm's __init__ drew the bar, before it
        # set last_print_t (tqdm's close() then leaves the line open).
        def refresh(self, *args, **kwargs):
            super().refresh(*args, **kwargs)
            raise KeyboardInterrupt

    def body() -> None:
        for _ in InterruptedAfterFirstDraw(range(2), desc="export", file=sys.stderr):
            pass

    assert run_main(body, "demo_tool", interrupted="no output folder written") == EXIT_SIGINT
    err = capsys.readouterr().err
    assert "export:" in err
    assert err.splitlines()[-1] == "demo_tool: interrupted; no output folder written", err


def test_usage_and_runtime_errors_are_one_line(capsys):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    def bad_input() -> int:
        raise UsageError("--threads must be >= 0, got -3")

    assert run_main(bad_input, "demo_tool") == EXIT_USAGE
    assert capsys.readouterr().err == "demo_tool: error: --threads must be >= 0, got -3\n"

    def broken_disk() -> int:
        raise OSError("No space left on device")

    assert run_main(broken_disk, "demo_tool", runtime_errors=(OSError,)) == 1
    assert capsys.readouterr().err == "demo_tool: error: No space left on device\n"
    # The previous handlers are back: pytest's own signal handling is untouched.
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


class _BadItem(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int):
        if i == 1:
            raise UsageError("frames/000001.png: holds class id 50")
        return i


@pytest.mark.parametrize("workers", [0, 1])
def test_an_error_from_a_data_loader_worker_is_its_own_message(workers, capsys):
    """A worker's error comes back with the worker's traceback in its text: not printed."""
    def load() -> int:
        for _ in torch.utils.data.DataLoader(_BadItem(), num_workers=workers):
            pass
        return 0

    assert run_main(load, "demo_tool") == EXIT_USAGE
    assert capsys.readouterr().err == "demo_tool: error: frames/000001.png: holds class id 50\n"


# ------------------------------------------- file-system errors: one home for every tool
WRITER = textwrap.dedent("""
    import sys
    from ssp_perception.cli import run_main
    from ssp_perception.files import atomic_write_json

    def body():
        if sys.argv[1] == "print":
            print("x" * 100000)
        else:
            atomic_write_json(sys.argv[2], {"a": 1})

    sys.exit(run_main(body, "demo_tool"))   # lists no OSError of its own
""")


def _writer(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WRITER, *args], text=True,
                          stderr=subprocess.PIPE, timeout=60, **kw)


def test_a_full_stdout_is_one_line_and_status_1():
    with open("/dev/full", "w") as full:
        done = _writer("print", stdout=full)
    assert done.returncode == 1, done.stderr
    # No 'Exception ignored' from the interpreter's own flush at exit: stdout went to devnull.
    assert done.stderr == ("demo_tool: error: cannot write the output (standard output or a "
                           "file): No space left on device\n")


def test_a_closed_stdout_pipe_is_one_line_and_status_1():
    proc = subprocess.Popen([sys.executable, "-c", WRITER, "print"], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()    # the reader is gone (``| head`` that has had enough)
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 1
    assert err == ("demo_tool: error: cannot write the output (standard output or a file): "
                   "Broken pipe\n")


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs sysfs (Linux)")
def test_an_output_this_user_may_not_write_names_the_path_not_its_staging_sibling():
    # /sys refuses every new file, also to root (chmod does not stop root).
    done = _writer("file", "/sys/report.json", stdout=subprocess.DEVNULL)
    assert done.returncode == EXIT_USAGE
    assert done.stderr.startswith("demo_tool: error: /sys/report.json: Permission denied; "), \
        done.stderr
    assert ".tmp-" not in done.stderr and len(done.stderr.splitlines()) == 1


def test_a_signal_swallowed_during_the_import_still_stops_the_tool(tmp_path):
    # As when SIGTERM lands in a callback whose exceptions Python ignores (importlib's
    # module-lock one): the import goes on, but the tool must not start its work.
    (tmp_path / "swallowing_tool.py").write_text(textwrap.dedent("""
        import os, signal, time
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        except BaseException:
            pass

        def main():
            print("main ran")
            return 0
    """))
    code = "from ssp_perception.cli import entry; entry('demo_tool', 'swallowing_tool')"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": ":".join(
                              [str(tmp_path), *sys.path])})
    assert proc.returncode == EXIT_SIGTERM, proc.stderr
    assert "main ran" not in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == "demo_tool: interrupted; nothing was written"


def test_a_signal_dropped_in_a_finaliser_prints_no_traceback(tmp_path):
    # Python drops exceptions raised in __del__ (and importlib's lock callbacks) and prints
    # them with a traceback; a tool's own signal must not print one.
    code = textwrap.dedent("""
        import os, signal, sys
        from ssp_perception.cli import entry

        class Dropped:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(10 ** 6):   # the handler runs here, inside the finaliser
                    pass

        def body():
            Dropped()
            return 0

        sys.modules["demo_mod"] = type(sys)("demo_mod")
        sys.modules["demo_mod"].main = lambda: __import__("ssp_perception.cli").cli.run_main(
            body, "demo_tool")
        entry("demo_tool", "demo_mod")
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == EXIT_SIGINT, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
