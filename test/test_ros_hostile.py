"""ssp_node, ssp_bench and ssp_replay given hostile input: one error line, nothing touched.

Each case runs the tool exactly as its console script does (``ssp_perception.console``) on the
exact input of issue 17 and checks the exit status (2 for bad input), that the last line of
its output is the one error line, and that the folder it ran in is unchanged.
"""

import collections
import json
import os
import pickle

import pytest
from ssp_perception.testing import assert_one_error_line, run_tool, snapshot, Tool

import test_replay as tr

DOMAIN = 100 + os.getpid() % 100
# The bundled demo model starts quickly; the node's start-up ends with this log line.
STARTED = "segmenting /image with"


def _node(tmp_path, *ros_args, **kw):
    return run_tool("ssp_node", "--ros-args", *ros_args, cwd=tmp_path, domain_id=DOMAIN, **kw)


def test_node_help_prints_usage_and_parameters(tmp_path):
    code, out = run_tool("ssp_node", "--help", cwd=tmp_path)
    assert code == 0, out
    assert out.startswith("usage: ssp_node") and "--params-file FILE" in out
    assert "model_path (string, read-only)" in out and "stream.max_gap_s" in out
    assert STARTED not in out and not list(tmp_path.iterdir())


@pytest.mark.parametrize("content, needles", [
    (None, ("--params-file", "missing.yaml: no such file")),
    ("ssp_node:\n  ros__parameters: {device: [cpu,\n", ("bad.yaml: not valid YAML (line",)),
    ("just a string\n", ("expected a ROS 2 parameter file",)),
    ("ssp_node:\n  device: cpu\n", ("'ros__parameters:'",)),
    ("/**:\n  ros__parameters:\n    stream:\n      input_size: [384, 640.0]\n",
     ("stream.input_size: [384, 640.0] mixes float and int values", "holds one type")),
], ids=["missing", "malformed", "scalar", "no_ros__parameters", "mixed_array"])
def test_node_bad_params_file_is_one_line(tmp_path, content, needles):
    name = "missing.yaml" if content is None else "bad.yaml"
    if content is not None:
        (tmp_path / name).write_text(content)
    before = snapshot(tmp_path)
    code, out = _node(tmp_path, "--params-file", str(tmp_path / name))
    assert code == 2, out
    assert_one_error_line(out, "ssp_node", *needles)
    assert "[rcl]" not in out and snapshot(tmp_path) == before


def test_node_bad_override_rule_is_one_line(tmp_path):
    code, out = _node(tmp_path, "-p", "stream.input_size:=[64,")
    assert code == 2, out
    assert_one_error_line(out, "ssp_node", "parameter override rule", "stream.input_size")
    assert "/project/src" not in out


def _weights(tmp_path, kind):
    path = tmp_path / f"{kind}.pt"
    if kind == "pickle":    # a pickled Python object, not a state dict of tensors
        path.write_bytes(pickle.dumps(collections.OrderedDict(a=collections.Counter())))
    elif kind == "empty":
        path.write_bytes(b"")
    return path


@pytest.mark.parametrize("kind, needle", [
    ("pickle", "holds pickled Python objects, which are never loaded"),
    ("missing", "file not found"),
    ("empty", "is empty (0 bytes)"),
])
def test_node_disk_lightglue_bad_weights_is_one_line(tmp_path, kind, needle):
    path = _weights(tmp_path, kind)
    before = snapshot(tmp_path)
    code, out = _node(tmp_path, "-p", "registration.method:=disk_lightglue",
                      "-p", f"registration.disk_weights:={path}",
                      "-p", f"registration.lightglue_weights:={path}")
    assert code == 2, out
    assert_one_error_line(out, "ssp_node", "cannot start: registration.disk_weights (DISK)",
                          str(path), needle)
    assert snapshot(tmp_path) == before


def test_node_invalid_value_is_one_line(tmp_path):
    code, out = _node(tmp_path, "-p", "stream.input_size:=[31,33]")
    assert code == 2, out
    assert_one_error_line(out, "ssp_node", "cannot start: invalid stream.* parameters",
                          "multiples of 32", "(31, 33)")


def test_node_warns_about_undeclared_parameters(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    overlay_alfa: 0.3\n")
    node = Tool("ssp_node", "--ros-args", "-p", "modle_path:=/nowhere.safetensors",
                "-p", "input_size:=[31,33]", "--params-file", str(params),
                cwd=tmp_path, domain_id=DOMAIN)
    node.wait_output(STARTED)
    out = node.output
    assert ("ignoring parameter 'modle_path': ssp_node declares no such parameter; did you "
            "mean 'model_path'?") in out
    assert "ignoring parameter 'input_size'" in out and "did you mean 'stream.input_size'?" in out
    assert "ignoring parameter 'overlay_alfa'" in out and "'overlay_alpha'?" in out
    code, out = node.signal(2)
    assert code == 130, out


def test_bench_json_into_a_folder_is_one_line(tmp_path):
    (tmp_path / "results").mkdir()
    before = snapshot(tmp_path)
    code, out = run_tool("ssp_bench", "--size", "64x96", "--frames", "1", "--warmup", "0",
                         "--no-progress", "--json", str(tmp_path / "results"), cwd=tmp_path)
    assert code == 2, out
    assert_one_error_line(out, "ssp_bench", "--json", "is a folder")
    assert '"image_model_ms"' not in out     # refused before the benchmark ran
    assert snapshot(tmp_path) == before


def test_bench_json_never_replaces_another_file(tmp_path):
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")   # its own checkpoint
    before = snapshot(tmp_path)
    code, out = run_tool("ssp_bench", "--size", "64x96", "--frames", "1", "--warmup", "0",
                         "--no-progress", "--json", str(model), cwd=tmp_path)
    assert code == 2, out
    assert_one_error_line(out, "ssp_bench", f"--json {model}", "not an earlier ssp_bench report")
    assert snapshot(tmp_path) == before
    report = tmp_path / "b.json"
    for _ in range(2):   # its own report is replaced
        code, out = run_tool("ssp_bench", "--size", "64x96", "--frames", "1", "--warmup", "0",
                             "--no-progress", "--json", str(report), cwd=tmp_path)
        assert code == 0, out
        assert json.loads(report.read_text())["tool"] == "ssp_bench"


def test_bench_node_commands_check_json_first(tmp_path):
    code, out = run_tool("ssp_bench", "node-overhead", "--frames", "1", "--json",
                         str(tmp_path), cwd=tmp_path)
    assert code == 2, out
    assert_one_error_line(out, "ssp_bench", "is a folder")


@pytest.mark.parametrize("target", ["file", "foreign"])
def test_replay_overwrite_replaces_only_its_own_output(tmp_path, target, bag_and_model):
    bag, model = bag_and_model
    out = tmp_path / "out"
    if target == "file":
        out.write_text("the user's notes\n")
    else:
        out.mkdir()
        (out / "photo.jpg").write_bytes(b"\xff\xd8 not ours")
    before = snapshot(tmp_path)
    code, text = run_tool("ssp_replay", str(bag), "--out", str(out), "--overwrite",
                          "--no-compare", "--no-progress", "--in-process",
                          "--domain-id", str(DOMAIN), "-p", f"model_path:={model}",
                          cwd=tmp_path)
    assert code == 2, text
    needle = "exists and is not a folder" if target == "file" else "not written by ssp_replay"
    assert_one_error_line(text, "ssp_replay", str(out), needle)
    assert snapshot(tmp_path) == before        # no .out.old-PID, no staging folder


@pytest.fixture(scope="module")
def bag_and_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay_inputs")
    model = root / "lite.safetensors"
    tr.save_artifact(model, tr.create_model(tr.preset("lite", input_size=(64, 96))), tr.UAVID)
    return tr.write_bag(root / "flight", n=3), model


def test_replay_overwrite_replaces_its_own_output(tmp_path, bag_and_model):
    bag, model = bag_and_model
    out = tmp_path / "out"
    args = [str(bag), "--out", str(out), "--no-compare", "--no-progress", "--no-video",
            "--in-process", "--domain-id", str(DOMAIN), "-p", f"model_path:={model}"]
    assert run_tool("ssp_replay", *args, cwd=tmp_path)[0] == 0
    first = (out / "report.json").stat().st_mtime_ns
    code, text = run_tool("ssp_replay", *args, "--overwrite", cwd=tmp_path)
    assert code == 0, text
    assert (out / "report.json").stat().st_mtime_ns != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
