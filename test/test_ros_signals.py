"""Ctrl-C and SIGTERM end ssp_node, ssp_replay and ssp_bench with 130 / 143 after cleanup.

Each tool runs as its console script, in the foreground or as a background job would (SIGINT
inherited as ignored), and gets the signal at a point the test waits for: start-up (the
signal handlers are in place, the heavy imports are running), mid-work (a line in the output,
a file appearing) and, for the replay, a second signal while the first one's cleanup runs.
"""

import os
import re
import signal
import threading
import time

import pytest
from ssp_perception.ros.replay.bag import BagRecorder
from ssp_perception.testing import Tool

import test_replay as tr

INT, TERM = signal.SIGINT, signal.SIGTERM
STATUS = {INT: 130, TERM: 143}
DOMAIN = 100 + (os.getpid() + 37) % 100


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("signal_inputs")
    model = root / "lite.safetensors"
    tr.save_artifact(model, tr.create_model(tr.preset("lite", input_size=(64, 96))), tr.UAVID)
    # Long enough that the node cannot finish it before the test's signal arrives.
    return tr.write_bag(root / "long", n=200, labels=False), model


# ---- ssp_node ------------------------------------------------------------------------------

@pytest.mark.parametrize("point, sig, background", [
    ("start-up", INT, True),
    ("start-up", TERM, False),
    ("running", INT, False),
    ("running", INT, True),
    ("running", TERM, True),
])
def test_node_signal(tmp_path, point, sig, background):
    node = Tool("ssp_node", "--ros-args", "-p", "num_threads:=1", background=background,
                cwd=tmp_path, domain_id=DOMAIN)
    if point == "start-up":
        node.wait_handlers()
    else:
        node.wait_output("segmenting /image with")
    code, out = node.signal(sig)
    assert code == STATUS[sig], out
    assert "Traceback" not in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("ssp_node: interrupted; "), out
    assert not list(tmp_path.iterdir())


# ---- ssp_replay ----------------------------------------------------------------------------

def _replay(tmp_path, inputs, *extra, background=False):
    bag, model = inputs
    return Tool("ssp_replay", str(bag), "--out", str(tmp_path / "out"), "--no-compare",
                "--no-progress", "--domain-id", str(DOMAIN), "-p", f"model_path:={model}",
                "-p", "num_threads:=1", *extra, background=background, cwd=tmp_path)


def _replaying(tmp_path):
    # The replay has opened its output bag in the staging folder: the node is running.
    return lambda: bool(list(tmp_path.glob(".out.staging-*/bag/*.db3")))


@pytest.mark.parametrize("point, sig, background, where", [
    ("start-up", TERM, False, "--in-process"),
    ("replaying", INT, True, "--in-process"),     # the background flake of issue 21
    ("replaying", TERM, False, "--in-process"),
    ("replaying", INT, False, "own process"),
    ("replaying", TERM, True, "own process"),
])
def test_replay_signal_leaves_no_partial_output(tmp_path, inputs, point, sig, background,
                                                where):
    extra = ("--in-process",) if where == "--in-process" else ()
    replay = _replay(tmp_path, inputs, *extra, background=background)
    if point == "start-up":
        replay.wait_handlers()
    else:
        replay.wait_until(_replaying(tmp_path), "output bag opened")
    code, out = replay.signal(sig)
    assert code == STATUS[sig], out
    assert out.strip().splitlines()[-1] in ("ssp_replay: interrupted; no output written",
                                            "ssp_replay: interrupted; nothing was written")
    assert "Traceback" not in out
    assert not list(tmp_path.iterdir())      # no out/, no staging folder


def test_replay_second_signal_during_cleanup_keeps_the_first_status(tmp_path, inputs):
    replay = _replay(tmp_path, inputs)      # own process: its cleanup stops the node
    replay.wait_until(_replaying(tmp_path), "output bag opened")
    replay.proc.send_signal(INT)
    code, out = replay.signal(TERM)          # lands while the first one's cleanup runs
    assert code == 130, out
    assert out.count("interrupted") == 1 and "Traceback" not in out
    assert not list(tmp_path.iterdir())


class _Signal(Exception):
    pass


def _raise_signal(_signum, _frame):
    raise _Signal


def test_recorder_interrupted_while_creating_its_bag_stops_its_writer(tmp_path):
    # The CI flake of the replay test above: a signal that lands while BagRecorder's writer
    # thread creates the bag used to leave that thread alive, still creating files in the
    # staging folder as the cleanup removed it. SIGUSR1 stands in for SIGINT so that a late
    # signal can never interrupt pytest itself; it is sent as soon as the .db3 file appears.
    previous = signal.signal(signal.SIGUSR1, _raise_signal)
    inside = 0
    try:
        for attempt in range(10):
            folder = tmp_path / str(attempt)
            sent = threading.Event()

            def interrupt_once_the_bag_appears(folder=folder, sent=sent):
                deadline = time.monotonic() + 10.0
                while not list(folder.glob("bag/*.db3")) and time.monotonic() < deadline:
                    time.sleep(0.0002)
                os.kill(os.getpid(), signal.SIGUSR1)
                sent.set()

            before = set(threading.enumerate())
            threading.Thread(target=interrupt_once_the_bag_appears, daemon=True).start()
            recorder = None
            try:
                recorder = BagRecorder(folder / "bag", "sqlite3")
                sent.wait()        # the signal is raised here if the constructor finished
                time.sleep(0.05)
            except _Signal:
                pass
            if recorder is not None:
                recorder.close()
                continue
            inside += 1
            writers = [t for t in set(threading.enumerate()) - before
                       if t.name == "bag_writer"]
            assert not writers, f"attempt {attempt}: the bag writer thread is still running"
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert inside, "no signal landed inside BagRecorder(): nothing was checked"


# ---- ssp_bench -----------------------------------------------------------------------------

@pytest.mark.parametrize("point, sig, background", [
    ("start-up", INT, True),
    ("timing", TERM, False),
    ("timing", INT, True),
])
def test_bench_signal(tmp_path, point, sig, background):
    bench = Tool("ssp_bench", "--size", "64x96", "--frames", "100000", "--warmup", "1",
                 "--threads", "1", "--json", str(tmp_path / "bench.json"),
                 background=background, cwd=tmp_path)
    if point == "start-up":
        bench.wait_handlers()
    else:   # the progress bar has started: frames are being timed
        bench.wait_until(lambda: re.search(r"\| [1-9]\d*/100001 \[", bench.output),
                         "timed frames")
    code, out = bench.signal(sig)
    assert code == STATUS[sig], out
    assert out.strip().splitlines()[-1].startswith("ssp_bench: interrupted; "), out
    assert "Traceback" not in out
    assert not list(tmp_path.iterdir())      # no bench.json, no temporary file
