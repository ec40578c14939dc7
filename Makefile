# imagebridge — every target installs what it needs, so a fresh Debian machine
# needs only `make demo` or `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Debian packages the tests use: dciodvfy (dicom3tools) validates built KOS objects;
# Orthanc with its DICOMweb plugin is the real PACS of the integration tests;
# chromium is the browser Playwright drives in tests/browser (never `playwright install`);
# postgresql gives initdb/pg_ctl for the throwaway clusters of the PostgreSQL tests and
# nginx is the load balancer in front of two workers (tests/integration/test_workers.py).
DEBIAN_PACKAGES := dicom3tools orthanc orthanc-dicomweb chromium postgresql nginx
SYSTEM_STAMP := $(VENV)/.system-packages
# Debian packages only `make bench` needs: nginx is the static-file baseline of
# bench/rad75_throughput.py and bench/initiator_rate.py (each starts its own nginx on a
# loopback port); wrk is the light HTTP client of bench/worker_scaling.py.
# `make bench` runs every benchmark, collects their figures and writes bench/results.md.
BENCH_DEBIAN_PACKAGES := nginx wrk
BENCH_SYSTEM_STAMP := $(VENV)/.bench-system-packages

.PHONY: demo test check bench venv clean system-packages

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# $(call install-debian,PACKAGES) installs those of PACKAGES that are missing
# (needs root, as on the project's machines and CI).
define install-debian
	@missing=""; for p in $(1); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
endef

$(SYSTEM_STAMP): Makefile | $(STAMP)
	$(call install-debian,$(DEBIAN_PACKAGES))
	touch $(SYSTEM_STAMP)

$(BENCH_SYSTEM_STAMP): Makefile | $(STAMP)
	$(call install-debian,$(BENCH_DEBIAN_PACKAGES))
	touch $(BENCH_SYSTEM_STAMP)

system-packages: $(SYSTEM_STAMP)

demo: $(STAMP)
	$(BIN)/imagebridge demo

check: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy --strict src

test: check $(SYSTEM_STAMP)
	$(BIN)/pytest -q

bench: $(STAMP) $(SYSTEM_STAMP) $(BENCH_SYSTEM_STAMP)
	rm -f bench/.results.jsonl
	-$(BIN)/python bench/mtom_throughput.py --results bench/.results.jsonl
	-$(BIN)/python bench/responder.py --results bench/.results.jsonl
	-$(BIN)/python bench/rad75_throughput.py --results bench/.results.jsonl
	-$(BIN)/python bench/fanout.py --results bench/.results.jsonl
	-$(BIN)/python bench/import_throughput.py --results bench/.results.jsonl
	-$(BIN)/python bench/load.py --results bench/.results.jsonl
	-$(BIN)/python bench/worker_scaling.py --results bench/.results.jsonl
	-$(BIN)/python bench/initiator_rate.py --results bench/.results.jsonl
	-$(BIN)/python bench/saml_verify.py --results bench/.results.jsonl
	$(BIN)/python bench/results.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
