# plantstream developer entry points. Each target creates .venv and installs what it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DURATION ?= 60
# The peer benchmark (tests/bench/peer.py) runs Quix Streams in its own venv: its pins
# (confluent-kafka …) must not touch .venv. Keep the version in step with
# QUIXSTREAMS_VERSION in tests/bench/peer.py (same marker file).
PEER_VENV := .venv-peer
PEER_QUIXSTREAMS := 3.28.1

.PHONY: demo test lint bench eval clean system-deps lock

# Reproducible installs: every package of .venv (runtime + embedded + dev, and the build backend)
# comes from requirements/lock.txt, pinned with the sha256 of every file PyPI serves for it;
# the image installs requirements/runtime.txt (the runtime part, same pins). plantstream itself
# is installed from the checkout with --no-deps. `make lock` refreshes them (docs/deploy.md).
LOCK := requirements/lock.txt
LOCKS := requirements/pip.txt $(LOCK) requirements/helm-sdkpy.txt
PIP_COMPILE_VENV := .venv-lock
PIP_TOOLS := 7.6.2

# plantstream editable, with the embedded runtime and the dev tools. The simulators (simulators/,
# their own distribution plantstream-simulators for wheels and images) come from the checkout:
# the editable install maps plantstream to plantstream/, whose plantstream/simulators links to
# simulators/. They are not installed a second time as a distribution: setuptools' editable (or
# wheel) install of a distribution holding only plantstream.simulators declares `plantstream` a
# namespace package, which hides the editable plantstream's __init__ (see docs/simulators.md).
$(BIN)/.installed: pyproject.toml simulators/pyproject.toml $(LOCKS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes -r requirements/pip.txt
	$(BIN)/pip install -q --require-hashes -r $(LOCK)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	$(BIN)/python -c 'import plantstream.simulators.plc'
	# Helm's Go library for the chart tests; its wheel declares Python 3.12 but runs on 3.11.
	$(BIN)/pip install -q --require-hashes --no-deps --ignore-requires-python -r requirements/helm-sdkpy.txt
	touch $@

demo: $(BIN)/.installed
	$(BIN)/plantstream demo --duration $(DURATION)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The MQTT connector tests also run against Mosquitto; the daily report test renders the HTML in
# headless Chromium and reads the screenshot with Tesseract. Installed with apt when missing.
system-deps:
	@missing=""; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v tesseract >/dev/null 2>&1 || missing="$$missing tesseract-ocr"; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing$$missing"; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

test: $(BIN)/.installed system-deps lint
	$(BIN)/pytest

$(PEER_VENV)/.quixstreams-$(PEER_QUIXSTREAMS):
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/pip install -q --upgrade pip
	$(PEER_VENV)/bin/pip install -q 'quixstreams==$(PEER_QUIXSTREAMS)'
	touch $@

# Every benchmark in tests/bench/; bench_plant writes bench-results.json (see the README).
bench: $(BIN)/.installed $(PEER_VENV)/.quixstreams-$(PEER_QUIXSTREAMS)
	$(BIN)/python -m tests.bench

# The anomaly flow on the SKAB benchmark (GPL-3.0, kept outside the repository): every experiment
# of SKAB_DATA through replay with the published protocol (docs/anomaly.md, "Results").
SKAB_DATA ?= ../shared/data/skab
eval: $(BIN)/.installed
	$(BIN)/plantstream eval anomaly $(SKAB_DATA)/valve1 --format skab --warmup-s 400
	$(BIN)/plantstream eval anomaly $(SKAB_DATA)/anomaly-free --format skab --warmup-s 400

# Refresh the locks from pyproject.toml (newest versions its ranges allow; hashes of every file
# on PyPI). runtime.txt starts from lock.txt's pins so both hold the same versions. Then
# `make clean test`. pip-tools runs in its own venv; the machine's pip config is ignored so the
# hashes are PyPI's.
lock:
	test -x $(PIP_COMPILE_VENV)/bin/pip-compile || { $(PYTHON) -m venv $(PIP_COMPILE_VENV) && \
	  $(PIP_COMPILE_VENV)/bin/pip install -q 'pip-tools==$(PIP_TOOLS)'; }
	env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null CUSTOM_COMPILE_COMMAND="make lock" \
	  $(PIP_COMPILE_VENV)/bin/pip-compile -q --upgrade --generate-hashes --allow-unsafe --all-build-deps \
	  --strip-extras --no-emit-index-url --no-emit-find-links --extra embedded --extra dev -o $(LOCK) pyproject.toml
	cp $(LOCK) requirements/runtime.txt
	env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null CUSTOM_COMPILE_COMMAND="make lock" \
	  $(PIP_COMPILE_VENV)/bin/pip-compile -q --generate-hashes --allow-unsafe --all-build-deps \
	  --strip-extras --no-emit-index-url --no-emit-find-links -o requirements/runtime.txt pyproject.toml
	@echo "requirements/pip.txt and requirements/helm-sdkpy.txt: see docs/deploy.md (pip download + pip hash)"

clean:
	rm -rf $(VENV) $(PEER_VENV) $(PIP_COMPILE_VENV) .plantstream .pytest_cache .mypy_cache .ruff_cache
