# Everyday commands. `make setup` once, then any of the others.
PY ?= .venv/bin/python
REGISTRY ?= ghcr.io/latent-verbalizer
TAG ?= $(shell $(PY) -c "import latent_verbalizer; print(latent_verbalizer.__version__)" 2>/dev/null || echo 0.1.0)

.PHONY: setup demo test image-test pipeline check-pipeline images bench lock check-floors

setup:            ## venv, pinned torch pair, the package, offline model files (log: build/setup.log)
	@scripts/setup.sh
	@touch $(SETUP_DONE)

# What demo, test and image-test need: set up once, and again when the lock or the package's
# declaration changes (`make setup` always runs it).
SETUP_DONE = .venv/setup-done
$(SETUP_DONE): locks/setup.txt pyproject.toml scripts/setup.sh
	@scripts/setup.sh
	@touch $@

demo: $(SETUP_DONE) ## the whole pipeline locally on sample images, offline (kfp.local)
	.venv/bin/lverb run --local --compare-with tiny-random-blip

# Test workers (pytest-xdist): one per core; each test module stays on one worker, so a module's
# shared fixtures (a pipeline run, a built wheel) are made once; modules go in collection order
# (conftest.py puts the whole-pipeline ones first), not by test count. TEST_WORKERS=0: no workers.
TEST_WORKERS ?= auto

test: $(SETUP_DONE) ## the default test suite (starts its own S3 server per worker)
	PATH="$(CURDIR)/.venv/bin:$$PATH" .venv/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

image-test: $(SETUP_DONE) ## build the image (stand-in base, no pulls) and run every step and the pipeline in it
	@scripts/image_test_tools.sh
	mkdir -p build
	rm -f build/image-test-figures.json
	PATH="$(CURDIR)/.venv/bin:$$PATH" LVERB_IMAGE_FIGURES="$(CURDIR)/build/image-test-figures.json" \
	  .venv/bin/python -m pytest -q -m image tests/image
	@cat build/image-test-figures.json

pipeline:         ## re-compile the committed pipeline YAML
	.venv/bin/lverb compile --output latent_verbalizer.yaml

check-pipeline:   ## fail when the committed YAML is stale
	.venv/bin/python -m pytest -q tests/test_compile.py

lock:             ## re-resolve locks/setup.txt and locks/image.txt from pyproject.toml (needs PyPI)
	scripts/lock.sh

check-floors: $(SETUP_DONE) ## the exactness tests on the lowest versions pyproject.toml declares (needs PyPI)
	scripts/check_floors.sh

images:           ## build (PUSH=1: and push) the component image
	docker/build.sh $(REGISTRY) $(TAG)

bench:            ## benchmarks (on a GPU machine); results go to benchmarks/RESULTS.md by hand
	$(PY) benchmarks/extract.py && $(PY) benchmarks/caption.py && $(PY) benchmarks/categorize.py
