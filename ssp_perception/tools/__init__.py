"""Command-line tools over the core: bench (ssp_bench), compare_backends, model_bench, gpu_check.

Tools sit on top of the layers: they may import the core and ``ssp_perception.ros``; nothing in
the core imports them.
"""
