# ssp_perception — the four commands of the README. Each one sets up first (idempotent).
# ROS_DISTRO=kilted (the default) or jazzy picks the ROS 2 distribution; each has its own venv
# and colcon folders (.venv + build/ install/ log/, or .venv-jazzy + build-jazzy/ ...), e.g.
#   make test ROS_DISTRO=jazzy
SHELL := /bin/bash
.DEFAULT_GOAL := help
.PHONY: help setup demo test demo-model
ROS_DISTRO ?= kilted
export ROS_DISTRO

help:  ## list the targets (add ROS_DISTRO=jazzy for the Jazzy environment)
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

setup:  ## venv with pinned packages + colcon build of the three packages (idempotent)
	@bash scripts/setup.sh

demo: setup  ## synthetic UAV bag -> ssp_node -> report, plots, video in demo_output/
	@bash scripts/demo.sh

test: setup  ## colcon test of all packages, pytest summary, colcon test-result
	@bash scripts/test.sh

demo-model: setup  ## retrain the bundled lite demo checkpoint on synthetic data (CPU, ~26 min)
	@bash scripts/demo_model.sh
