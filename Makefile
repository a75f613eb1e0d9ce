# The front door: `make sweep` runs the study, `make test` runs the tests. Both create .venv and
# install the project into it on first use (pip; torch/torchvision come pinned in pyproject.toml).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
CIFAR10_DIR ?= $(HOME)/.cache/cifar10
CIFAR10_TAR ?= ../shared/data/cifar10-jpeg.tar.gz
export CIFAR10_DIR

.PHONY: setup data sweep test lint bench
setup: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $(STAMP)

# The test tools (pytest, ruff) come from the project's `test` extra; the tests also cover the
# optional `mlflow` extra (--mlflow), so it is installed with them.
$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,mlflow]'
	touch $(TEST_STAMP)

# Unpack the shared CIFAR-10 copy into a cache outside the repo when it is not there yet;
# elsewhere the sweep downloads it with torchvision (--download).
data:
	@if [ ! -d "$(CIFAR10_DIR)/train" ] && [ ! -d "$(CIFAR10_DIR)/cifar-10-batches-py" ] && [ -f "$(CIFAR10_TAR)" ]; then \
	  echo "unpacking $(CIFAR10_TAR) into $(CIFAR10_DIR)"; mkdir -p "$(CIFAR10_DIR)" && tar xzf "$(CIFAR10_TAR)" -C "$(CIFAR10_DIR)"; fi

sweep: $(STAMP) data
	$(PY) -m sweep.grid --download $(ARGS)

test: $(TEST_STAMP) data
	$(PY) -m pytest -q $(ARGS)

lint: $(TEST_STAMP)
	$(PY) -m ruff check .

bench: $(STAMP) data
	$(PY) -m benchmarks $(ARGS)
