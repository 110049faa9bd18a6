# medevac: the two commands a fresh machine needs are `make demo` and `make test`.
# Every target installs what it needs first (venvs from pinned locks, Debian packages).

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
# pip on some machines warns about absent local indexes on every package: keep logs readable.
QUIET_PIP := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
VENV := .venv
LAB_VENV := .venv-lab
PIP_FLAGS := --quiet --disable-pip-version-check
SCENARIO ?= host-crash

.PHONY: all demo test lint types unit lab-tests deps services venv lab-venv clean bench bench-long

all: test

## Virtual environments, rebuilt when their lock changes.
$(VENV)/.stamp: requirements/product.lock pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) -r requirements/product.lock $(QUIET_PIP)
	$(VENV)/bin/pip install $(PIP_FLAGS) --no-deps -e . $(QUIET_PIP)
	touch $@

$(LAB_VENV)/.stamp: requirements/lab.lock
	test -x $(LAB_VENV)/bin/python || $(PYTHON) -m venv $(LAB_VENV)
	$(LAB_VENV)/bin/pip install $(PIP_FLAGS) -r requirements/lab.lock $(QUIET_PIP)
	touch $@

venv: $(VENV)/.stamp
lab-venv: $(LAB_VENV)/.stamp

## Debian packages and local services the lab and the tests use.
deps:
	@bash scripts/install-debian-deps.sh

services:
	@bash scripts/ensure-services.sh

## The main job: the demo on the embedded lab.
demo: venv lab-venv deps
	$(VENV)/bin/medevac demo --scenario $(SCENARIO)

## The whole test suite: lint, types, unit, integration and lab tests.
test: venv lab-venv deps services lint types
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

types: venv
	$(VENV)/bin/mypy
	MYPYPATH=bench $(VENV)/bin/mypy --strict --explicit-package-bases bench/*.py

## Benchmarks: figures printed and written to docs/benchmarks.md, most with a chart.
## `make bench` (the parts' times below), `make bench QUICK=1` (a smoke run, writes
## nothing), `make bench-long` (the 10-minute soaks, the bursty soak at three probe
## timeouts, the 100- and 50-server labs, 100 takeovers, the owner killed at every point
## of a recovery). Detection on one controller and on three takes about 4 min (2 each),
## heartbeats about 6 min (the bursty soak 1 min with one controller, 1 with three),
## takeover with 20 kills and 20 pauses about 4 min, planned maintenance about 1.5 min,
## the scrape's cost 20 s; QUICK:
## about 45 s each. The owner killed mid-recovery: about 25 s a point and 45 s for its
## lab; 4 points in `make bench` (about 2.5 min), all 23 in bench-long (about 12 min),
## 2 with QUICK.
DOCS := --write-docs docs/benchmarks.md
bench: venv lab-venv deps services
ifdef QUICK
	$(VENV)/bin/python bench/lab_boot.py --runs 1 --sizes 3x2
	$(VENV)/bin/python bench/detection.py --runs 2 --controllers 1,3
	$(VENV)/bin/python bench/takeover.py --kills 2
	$(VENV)/bin/python bench/notify_path.py --runs 5 --sizes 1,100 --background 1000
	$(VENV)/bin/python bench/topology.py --servers 50000
	$(VENV)/bin/python bench/heartbeats.py --soak-seconds 10 --soak-hosts 10 --ingest-hosts 1000 --ingest-seconds 5 --bursty-seconds 5 --cluster-hosts 3000 --cluster-seconds 3
	$(VENV)/bin/python bench/notification.py --runs 2 --layout 10,1,0
	$(VENV)/bin/python bench/recovery.py --levels 2 --sizes 3
	$(VENV)/bin/python bench/recovery_kills.py --points 2
	$(VENV)/bin/python bench/identity.py --requests 50 --unseen 5
	$(VENV)/bin/python bench/metrics_scrape.py --runs 20 --api-runs 10
	$(VENV)/bin/python bench/maintenance.py --servers 2 --runs 1
else
	$(VENV)/bin/python bench/lab_boot.py --runs 1 --sizes 3x2,10x5 $(DOCS)
	$(VENV)/bin/python bench/detection.py --runs 20 --controllers 1,3 $(DOCS)
	$(VENV)/bin/python bench/takeover.py --kills 20 $(DOCS)
	$(VENV)/bin/python bench/notify_path.py --runs 20 $(DOCS)
	$(VENV)/bin/python bench/topology.py $(DOCS)
	$(VENV)/bin/python bench/heartbeats.py --soak-seconds 60 --bursty-seconds 60 --cluster-seconds 10 $(DOCS) --section heartbeats
	$(VENV)/bin/python bench/notification.py --runs 5 --layout 50,10,1,0 $(DOCS)
	$(VENV)/bin/python bench/recovery.py --levels 1,2,3 --sizes 10 $(DOCS)
	$(VENV)/bin/python bench/recovery_kills.py --points 4 $(DOCS)
	$(VENV)/bin/python bench/identity.py --requests 300 --unseen 30 $(DOCS)
	$(VENV)/bin/python bench/metrics_scrape.py --runs 500 --api-runs 300 $(DOCS)
	$(VENV)/bin/python bench/maintenance.py --servers 10 --runs 3 $(DOCS)
endif

bench-long: venv lab-venv deps services
	$(VENV)/bin/python bench/heartbeats.py --soak-seconds 600 --cluster-seconds 30 --cluster-runs 3 $(DOCS) --section heartbeats-long
	$(VENV)/bin/python bench/heartbeats.py --soak-seconds 0 --ingest-runs 0 --ingest-controllers '' --bursty-seconds 300 --bursty-controllers 1 --bursty-probe-timeouts 0.04,0.3,1.0 $(DOCS) --section heartbeats-bursty-probes
	$(VENV)/bin/python bench/notification.py --runs 5 --layout 100,50,10,1,0 $(DOCS) --section notification-long
	$(VENV)/bin/python bench/recovery.py --levels 1,2,3 --sizes 50 $(DOCS) --section recovery-long
	$(VENV)/bin/python bench/recovery.py --levels 2 --sizes 50 $(DOCS) --section recovery-level2
	$(VENV)/bin/python bench/takeover.py --kills 100 $(DOCS) --section takeover-long
	$(VENV)/bin/python bench/recovery_kills.py --keep-going $(DOCS) --section recovery-kills-long

clean:
	-$(VENV)/bin/medevac lab down 2>/dev/null
	rm -rf $(VENV) $(LAB_VENV) demo-output .pytest_cache .mypy_cache .ruff_cache
