"""Command-line tools built on the ssp_perception core (benchmarks, checks)."""
