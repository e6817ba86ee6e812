"""python -m ssp_perception.models: the preset benchmark runs on every fusion mode."""

import json

from ssp_perception.tools.model_bench import main


def test_model_bench_runs_lite_and_a_full_resolution_preset(capsys):
    # lite fuses at stride 4, hiera_s at full resolution: the state shapes differ.
    main(["--presets", "lite", "hiera_s", "--size", "64", "96", "--repeats", "1",
          "--threads", "1"])
    out = json.loads(capsys.readouterr().out)
    for name in ("lite", "hiera_s"):
        result = out["presets"][name]
        assert result["params"] > result["sim_params"] > 0
        assert result["image_ms"] > 0 and result["step_ms"] > 0
