"""Run ``python -m ssp_perception.models``: the model preset benchmark of ``tools.model_bench``."""

from ..tools.model_bench import main

main()
