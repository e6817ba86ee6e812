"""Tests of ssp_perception.files: atomic writes and guarded output folders."""

import itertools
import os
from pathlib import Path
import subprocess
import threading
import time

import pytest

from ssp_perception import files


def test_atomic_write_is_0644_and_leaves_no_temp(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        out = files.atomic_write_json(tmp_path / "a.json", {"b": 1, "a": 2})
    finally:
        os.umask(old)
    assert out.read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'
    assert (out.stat().st_mode & 0o777) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_staged_dir_replaces_only_on_success(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with files.staged_dir(dest, "ssp_x") as stage:
        (stage / "result.txt").write_text("one")
    assert (dest / "result.txt").read_text() == "one"
    with pytest.raises(KeyboardInterrupt):
        with files.staged_dir(dest, "ssp_x", force=True) as stage:
            (stage / "result.txt").write_text("two")
            raise KeyboardInterrupt
    assert (dest / "result.txt").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with files.staged_dir(dest, "ssp_x", force=True) as stage:
        (stage / "result.txt").write_text("three")
    assert (dest / "result.txt").read_text() == "three"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_staged_dir_is_removed_while_a_thread_still_writes_into_it(tmp_path: Path) -> None:
    # A writer thread that goes on creating files for a moment after the block failed (as a
    # bag writer did in the CI flake of ssp_replay's signal test) used to make the removal
    # fail with "directory not empty", silently: the staging folder stayed behind.
    for attempt in range(5):
        root = tmp_path / str(attempt)
        with pytest.raises(KeyboardInterrupt):
            with files.staged_dir(root / "out", "ssp_x") as stage:
                def write_for_a_moment(stage: Path = stage) -> None:
                    end = time.monotonic() + 0.2
                    for k in itertools.count():
                        if time.monotonic() > end:
                            return
                        try:
                            (stage / f"part{k}").write_bytes(b"x")
                        except OSError:   # the folder is gone
                            return

                writer = threading.Thread(target=write_for_a_moment)
                writer.start()
                time.sleep(0.01)
                raise KeyboardInterrupt
        writer.join()
        assert not list(root.iterdir()), f"attempt {attempt}: the staging folder stayed"


def test_check_output_target_refuses_foreign_paths(tmp_path: Path) -> None:
    user_file = tmp_path / "notes.txt"
    user_file.write_text("precious")
    with pytest.raises(files.OutputError, match="not a folder"):
        files.check_output_target(user_file, "ssp_x", force=True)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(files.OutputError, match="not written by ssp_x"):
        files.check_output_target(foreign, "ssp_x", force=True)
    with files.staged_dir(tmp_path / "mine", "ssp_y"):
        pass
    with pytest.raises(files.OutputError, match="an output of ssp_y"):
        files.check_output_target(tmp_path / "mine", "ssp_x", force=True)
    with pytest.raises(files.OutputError, match="pass --overwrite"):
        files.check_output_target(tmp_path / "mine", "ssp_y", force=False, flag="--overwrite")
    assert user_file.read_text() == "precious"
    assert (foreign / "thesis.tex").read_text() == "precious"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert files.check_output_target(empty, "ssp_x", force=False) == empty


def test_load_tensor_file_one_line_errors(tmp_path: Path) -> None:
    import pickle

    import torch
    good = tmp_path / "w.pth"
    torch.save({"a": torch.zeros(2)}, good)
    assert list(files.load_tensor_file(good, "test weights")) == ["a"]
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        files.load_tensor_file(tmp_path / "empty.pth", "test weights")
    with pytest.raises(FileNotFoundError, match="test weights: file not found"):
        files.load_tensor_file(tmp_path / "missing.pth", "test weights")
    evil = tmp_path / "evil.pth"
    torch.save({"a": files.OutputError("x")}, evil)
    with pytest.raises(ValueError, match="pickled Python objects"):
        files.load_tensor_file(evil, "test weights")
    (tmp_path / "junk.safetensors").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="cannot read"):
        files.load_tensor_file(tmp_path / "junk.safetensors", "test weights")


def test_a_folder_created_during_the_run_is_kept_and_so_is_the_output(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with pytest.raises(files.OutputError, match="created or replaced by another process") as e:
        with files.staged_dir(dest, "demo_tool") as stage:
            (stage / "result.txt").write_text("new")
            dest.mkdir()                                     # another writer, meanwhile
            (dest / "notes.txt").write_text("someone else's")
    assert (dest / "notes.txt").read_text() == "someone else's"
    kept = dest.with_name(f"out.demo_tool-{os.getpid()}")
    assert str(kept) in str(e.value) and (kept / "result.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", kept.name]


def test_an_own_output_replaced_during_a_forced_run_is_kept(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with files.staged_dir(dest, "demo_tool") as stage:
        (stage / "result.txt").write_text("first")
    with pytest.raises(files.OutputError, match="another process"):
        with files.staged_dir(dest, "demo_tool", force=True) as stage:
            (stage / "result.txt").write_text("second")

            def second_writer() -> None:   # another thread: its own staging folder
                with files.staged_dir(dest, "demo_tool", force=True) as other:
                    (other / "result.txt").write_text("third")

            writer = threading.Thread(target=second_writer)
            writer.start()
            writer.join()
    assert (dest / "result.txt").read_text() == "third"
    assert (dest.with_name(f"out.demo_tool-{os.getpid()}") / "result.txt").read_text() == "second"


def test_force_never_replaces_a_folder_holding_an_input_of_the_run(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with files.staged_dir(dest, "demo_tool") as stage:
        (stage / "result.txt").write_text("first")
    (dest / "model.safetensors").write_bytes(b"the user's only copy")
    with pytest.raises(files.OutputError, match="model.safetensors, an input of this run"):
        with files.staged_dir(dest, "demo_tool", force=True,
                              inputs=[dest / "model.safetensors"]):
            pass
    assert (dest / "model.safetensors").read_bytes() == b"the user's only copy"
    # An input elsewhere does not matter.
    with files.staged_dir(dest, "demo_tool", force=True, inputs=[tmp_path / "x"]) as stage:
        (stage / "result.txt").write_text("second")


def test_a_report_replaces_only_an_earlier_report_of_its_tool(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    assert files.check_report_file(report, "demo_tool") == report          # new: fine
    files.atomic_write_json(report, files.report_document("demo_tool", {"x": 1}))
    assert files.check_report_file(report, "demo_tool") == report          # its own: fine
    others = {"checkpoint.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
              "dataset.json": b'{"format": 1, "size": [64, 96]}',
              "other.json": b'{"tool": "ssp_bench"}', "list.json": b"[1, 2]", "empty": b""}
    for name, data in others.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(files.OutputError, match="is not an earlier demo_tool report"):
            files.check_report_file(tmp_path / name, "demo_tool")
        assert (tmp_path / name).read_bytes() == data
    assert files.check_report_file(tmp_path / "dataset.json", "demo_tool",
                                   legacy=lambda d: "format" in d)
    with pytest.raises(files.OutputError, match="is a folder"):
        files.check_report_file(tmp_path, "demo_tool")
    with pytest.raises(files.OutputError, match="is a file, not a folder"):
        files.check_report_file(tmp_path / "empty" / "r.json", "demo_tool")


def test_staged_dir_removes_the_staging_folder_a_killed_run_left(tmp_path: Path) -> None:
    done = subprocess.Popen(["true"])   # its pid names no process once it has ended
    done.wait()
    dest = tmp_path / "out"
    stale = tmp_path / f".out.staging-{done.pid}-1"   # as a kill -9 (or a segfault) leaves it
    stale.mkdir()
    files.atomic_write_json(stale / files.OUTPUT_MARKER, {"tool": "demo_tool"})
    foreign = tmp_path / f".out.staging-{done.pid}-2"  # not demo_tool's: never touched
    foreign.mkdir()
    with files.staged_dir(dest, "demo_tool") as stage:
        (stage / "result.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [foreign.name, "out"]
