"""ssp_node as the replay's child process: it dies with the replay, even on ``kill -9``.

A replay killed with SIGKILL runs no cleanup: its node must still go (the kernel signals it,
``replay/child.py``), and the next replay removes the staging folder and the parameter folder
the killed one left, and nothing that is not provably such a leftover.
"""

import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import pytest
from ssp_perception.files import OUTPUT_MARKER, remove_stale_stages
from ssp_perception.ros.replay.process import (make_params_dir, PARAMS_PREFIX,
                                               remove_stale_params_dirs)
from ssp_perception.ros.replay.run import replay
from ssp_perception.testing import Tool

import test_replay as tr

pytestmark = pytest.mark.slow
DOMAIN = 100 + (os.getpid() + 71) % 100


def _children(pid):
    """Return the pids of the processes whose parent is ``pid`` and that run ssp_node."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"ssp_perception.ros.node" in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_kill_9_of_the_replay_takes_its_node_and_the_next_run_cleans_up(tmp_path):
    model = tmp_path / "lite.safetensors"
    tr.save_artifact(model, tr.create_model(tr.preset("lite", input_size=(64, 96))), tr.UAVID)
    bag = tr.write_bag(tmp_path / "long", n=200, labels=False)
    out = tmp_path / "out"
    killed = Tool("ssp_replay", str(bag), "--out", str(out), "--no-compare", "--no-progress",
                  "--domain-id", str(DOMAIN), "-p", f"model_path:={model}",
                  "-p", "num_threads:=1", cwd=tmp_path)
    killed.wait_until(lambda: bool(_children(killed.proc.pid)), "node child started", 120.0)
    node = _children(killed.proc.pid)[0]
    killed.proc.send_signal(signal.SIGKILL)
    killed.finish()
    deadline = time.monotonic() + 10.0
    while _alive(node) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(node), f"node {node} outlived its replay"

    # kill -9 left the staging folder and the node's parameter folder behind.
    stages = list(tmp_path.glob(".out.staging-*"))
    params = list(Path("/tmp").glob(f"{PARAMS_PREFIX}{killed.proc.pid}_*"))
    assert stages and params
    replay(tr._cfg(tr.write_bag(tmp_path / "short", n=2, labels=False), out, model,
                   compare=False, video=False))
    assert not any(p.exists() for p in stages + params)
    assert (out / "report.json").is_file()


_made = []


def _stage(dest, pid, tool="ssp_replay"):
    stage = dest.with_name(f".{dest.name}.staging-{pid}-{140000000000 + len(_made)}")
    _made.append(stage)
    stage.mkdir()
    if tool:
        (stage / OUTPUT_MARKER).write_text(f'{{"tool": "{tool}"}}')
    return stage


def test_only_provable_leftovers_are_removed(tmp_path):
    dead = _dead_pid()
    dest = tmp_path / "out"
    gone = _stage(dest, dead)
    kept = [_stage(dest, os.getpid()),                       # a live replay's
            _stage(dest, dead, tool=None),                   # no marker: not provably ours
            _stage(dest, dead, tool="ssp_data"),             # another tool's
            _stage(tmp_path / "other", dead)]                # another output's
    assert remove_stale_stages(dest, "ssp_replay") == [gone]
    assert not gone.exists() and all(p.exists() for p in kept)

    root = tmp_path / "tmp"
    root.mkdir()
    stale = root / f"{PARAMS_PREFIX}{dead}_abc123"
    stale.mkdir()
    (stale / "ssp_params.yaml").write_text("/**: {}\n")
    foreign = root / f"{PARAMS_PREFIX}{dead}_def456"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a parameter file")
    live = root / f"{PARAMS_PREFIX}{os.getpid()}_ghi789"
    live.mkdir()
    old_style = root / f"{PARAMS_PREFIX}x1y2z3"   # no pid in the name: cannot prove whose
    old_style.mkdir()
    assert remove_stale_params_dirs(root) == [stale]
    assert foreign.exists() and live.exists() and old_style.exists()
    mine = make_params_dir()
    try:
        assert mine.name.startswith(f"{PARAMS_PREFIX}{os.getpid()}_")
    finally:
        mine.rmdir()
