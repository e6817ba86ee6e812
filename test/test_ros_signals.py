"""Ctrl-C and SIGTERM end ssp_node, ssp_replay and ssp_bench with 130 / 143 after cleanup.

Each tool runs as its console script, in the foreground or as a background job would (SIGINT
inherited as ignored), and gets the signal at a point the test waits for: start-up (the
signal handlers are in place, the heavy imports are running), mid-work (a line in the output,
a file appearing) and, for the replay, a second signal while the first one's cleanup runs.
"""

import os
import re
import signal

import pytest
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
