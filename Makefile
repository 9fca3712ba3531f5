# Two entry points: `make run` (demo pipeline) and `make test` (test suite).
# Both create .venv on first use; nothing is downloaded at run time.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	# MTCNN face detector; its metadata pins an old torch it does not need.
	$(BIN)/pip install --quiet --no-deps facenet-pytorch==2.6.0
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/dvc repro

test: $(STAMP)
	$(BIN)/ruff check src stages tests
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src stages tests
	$(BIN)/ruff format --check src stages tests

clean:
	rm -rf data/fetched data/aligned data/offline data/generated data/calibrated data/merged models/gan models/gan_checkpoints models/classifier models/teachers
