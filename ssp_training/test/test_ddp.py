"""The same ``ssp_train fit`` under torchrun: 2 CPU processes with gloo stay identical."""

import json
import os
import subprocess
import sys
import time

import pytest
from ssp_perception.artifact import load_artifact
from ssp_training.data.synth import generate_dataset, SynthConfig
from ssp_training.distributed import all_ranks, DistInfo
from ssp_training.recipes import CONFIG_DIR
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = pytest.mark.slow


def test_two_gloo_processes_train_identical_replicas(tmp_path):
    data = tmp_path / "synth"
    generate_dataset(data, SynthConfig(size=(64, 96), frames=9, sequences=3, seed=3),
                     progress=False)
    run = tmp_path / "run"
    # Global batch 8 = 2 ranks x 2 accumulated micro-batches x 2 samples (DDP no_sync on the
    # first micro-batch); 18 train frames -> 9 per rank -> 4 micro-batches -> 2 steps.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
           "--nproc_per_node", "2", "-m", "ssp_training.train", "fit", "--recipe",
           str(CONFIG_DIR / "synth_tiny_image.yaml"), f"data.root={data}",
           f"run.out_dir={run}", "optim.batch_size=8", "optim.grad_accum=2", "optim.epochs=1",
           "val.every=0", "val.max_frames=2", "run.plot=false", "run.device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    replicas = json.loads((run / "replicas.json").read_text())
    assert replicas["world_size"] == 2 and replicas["identical"]
    a, b = replicas["fingerprints"]
    assert a == b and len(a) > 100, "every parameter and buffer is fingerprinted"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2
    load_artifact(run / "model.safetensors")


def _decide(rank, init, flags, results):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=len(flags))
    try:
        info = DistInfo(rank=rank, world_size=len(flags), local_rank=rank,
                        device=torch.device("cpu"))
        results.put((rank, all_ranks(info, flags[rank])))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("flags,expected", [([True, True], True), ([True, False], False)])
def test_a_non_finite_loss_on_one_rank_stops_every_rank(flags, expected, tmp_path):
    # The trainer decides "the loss is finite" with all_ranks: the rank that saw NaN and the
    # ones that did not stop together (alone, it left the others in the gradient all-reduce).
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    procs = mp.start_processes(_decide, args=(f"file://{tmp_path / 'store'}", flags, results),
                               nprocs=len(flags), join=False, start_method="spawn")
    deadline = time.monotonic() + 120
    while not procs.join(timeout=5):    # True once every process has ended (an error raises)
        assert time.monotonic() < deadline, "a rank is still waiting"
    got = dict(results.get() for _ in flags)
    assert got == {rank: expected for rank in range(len(flags))}
