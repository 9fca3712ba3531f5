# Two entry points: `make run` (demo pipeline) and `make test` (test suite). Both work from a
# clean shell: they create .venv on first use and put .venv/bin on PATH for every command they
# run, since DVC starts each stage's `fersynth ...` with the caller's PATH.
# Nothing is downloaded at run time.
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
export PATH := $(BIN):$(PATH)

.PHONY: setup run test check-baseline lint lock clean browser

setup: $(STAMP)

# requirements.lock pins every package (transitive ones included) to what CI tested; it is
# installed with --no-deps, so facenet-pytorch (MTCNN, weights inside the wheel) can sit in
# it although its metadata pins an old torch it does not need.
$(STAMP): pyproject.toml requirements.lock
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	dvc repro

test: $(STAMP)
	ruff check src stages tests benchmarks .ci
	pytest

# Debian's Chromium and its WebDriver, for the browser test of `fersynth serve`'s page (Playwright's own
# browser download cannot work offline). Nothing to do when both are installed; apt-get through sudo unless root.
BROWSER_PACKAGES := chromium chromium-driver
browser:
	@if [ "$$(dpkg-query -W -f='$${Status}\n' $(BROWSER_PACKAGES) 2>/dev/null | grep -cx 'install ok installed')" = 2 ]; then \
		echo "$(BROWSER_PACKAGES): installed"; \
	else \
		sudo=$$([ "$$(id -u)" = 0 ] || command -v sudo); \
		$$sudo apt-get update && $$sudo apt-get install -y --no-install-recommends $(BROWSER_PACKAGES); \
	fi

# After `make run` on a fresh clone: the headline metrics agree with the committed baseline.
check-baseline: $(STAMP)
	python .ci/check_baseline.py

lint: $(STAMP)
	ruff check src stages tests benchmarks .ci
	ruff format --check src stages tests benchmarks .ci

# Regenerate the lock after changing dependencies in pyproject.toml (then commit it).
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip freeze --exclude-editable > requirements.lock

clean:
	rm -rf data/fetched data/aligned data/offline data/generated data/calibrated data/merged models/gan models/gan_checkpoints models/classifier models/teachers
