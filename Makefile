# discorecs: the two commands a new user needs are `make demo` and `make test`.
# Both create the virtualenv from requirements.txt on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: help venv tools demo demo-stop up down status test test-faults test-deployment bench lint format web clean

help:
	@echo "make demo       set up and run the whole pipeline locally, then serve the site"
	@echo "make demo-stop  stop everything the demo started"
	@echo "make test       set up, lint, and run the test suite against real services"
	@echo "make test-faults the longer fault tests on local three-node clusters"
	@echo "make test-deployment the AWS deployment rehearsed on local test hosts (root)"
	@echo "make bench      run the benchmarks (figures printed and written as JSON)"
	@echo "make lint       ruff check and format check"

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# DUMP=path|s3://bucket/key|https://... uses a real releases dump instead of a generated one.
demo: venv
	$(BIN)/discorecs demo $(if $(DUMP),--dump "$(DUMP)")

demo-stop down: venv
	$(BIN)/discorecs down

# NODES=3 runs three brokers and three Cassandra nodes on 127.0.0.1-3 (remembered by the home).
up: venv
	$(BIN)/discorecs up $(if $(NODES),--nodes $(NODES))

status: venv
	$(BIN)/discorecs status

# $(call install_if_missing,probe,package,what it is for): apt-get install the package when
# the probe (a shell command) fails.
define install_if_missing
	@if ! { $(1); } >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing $(2) ($(3))"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(2) >/dev/null; \
	  else echo "missing: $(2) ($(3)); install it with apt-get install $(2)" >&2; exit 1; fi; \
	fi
endef

# The browser test drives Debian's headless Chromium (with a CJK font: collectors' names
# include Japanese and Chinese) and the deployment test runs shellcheck; all are installed
# here when missing (needs root and apt-get).
tools:
	$(call install_if_missing,command -v chromium,chromium,the browser test)
	$(call install_if_missing,fc-list :lang=ja | grep -q .,fonts-noto-cjk,names in Japanese and Chinese on the browser's pages)
	$(call install_if_missing,command -v shellcheck,shellcheck,the deployment test)

# The tests start their own broker and Cassandra (free ports, temporary home) once per session
# and stop them at the end; a running demo is not touched.
test: venv tools lint
	$(BIN)/pytest

# The fault tests the default suite leaves out (tests marked `faults`): the nightly batch with
# a Cassandra node down, the stream's driver killed while a node is down.
test-faults: venv
	$(BIN)/pytest -m faults

# The AWS deployment rehearsed on six local test hosts (network namespaces; needs root):
# deployment/deploy.sh all, the nightly batch through its unit, the site, deploy.sh down.
test-deployment: venv tools
	$(BIN)/pytest -m rehearsal

web: venv
	$(BIN)/discorecs web

# Benchmarks print their figures and write them to bench/results/*.json.
bench: venv
	$(call install_if_missing,command -v wrk,wrk,the site benchmark)
	$(BIN)/python -m bench.catalog_ingest
	$(BIN)/python -m bench.users_and_producers
	$(BIN)/python -m bench.cassandra_load
	$(BIN)/python -m bench.stream
	$(BIN)/python -m bench.stream --rate 1000
	$(BIN)/python -m bench.stream --rate 5000
	$(BIN)/python -m bench.faults
	$(BIN)/python -m bench.faults --rate 1000
	$(BIN)/python -m bench.batch
	$(BIN)/python -m bench.web

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
