# s3encfs developer entry points. `make run` = demo against a local S3; `make test` = test suite.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON   ?= python3
VENV     := .venv
PY       := $(VENV)/bin/python
PIP      := $(PY) -m pip
STAMP    := $(VENV)/.s3encfs-deps-stamp
APT_PKGS := fuse3 libfuse3-dev pkg-config rsync s3fs fio attr
PREFIX_UNITS := /etc/systemd/system
BINDIR   := /usr/local/bin
SBINDIR  := /sbin
CONFDIR  := /etc/s3encfs
DOCDIR   := /usr/local/share/doc/s3encfs
DESTDIR  ?=

.PHONY: help deps sysdeps run test bench lint install uninstall clean

help:
	@echo "make run     - install deps, start a local S3 server and run the demo (s3encfs.demo)"
	@echo "make test    - install deps and run the test suite (pytest)"
	@echo "make bench   - install deps and run the benchmarks (bench.run)"
	@echo "make lint    - ruff + mypy + lint-imports (the tier contract in .importlinter)"
	@echo "make install - runtime venv $(RUN_VENV); link s3encfs + mount helpers, units, docs, man"
	@echo "make uninstall - remove what make install installed (keeps /etc/s3encfs and keys)"
	@echo "make deps    - Debian packages (if missing) + $(VENV) with the package in editable mode"

# Debian packages: only touch apt when something is actually missing.
sysdeps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update && apt-get install -y --no-install-recommends $$missing; \
	fi

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when pyproject.toml changes (or the venv is new).
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q -e '.[server,dev]'
	touch $(STAMP)

deps: sysdeps $(STAMP)

run: deps
	$(PY) -m s3encfs.demo

# Tests run on TEST_WORKERS pytest-xdist workers (each starts its own SeaweedFS; whole files per
# worker, so module-wide mounts are made once), then the tests marked `serial` (timing-sensitive,
# or filling a disk) run alone. TEST_WORKERS=0: the whole suite in one process, in order.
TEST_WORKERS ?= 3
test: deps
ifeq ($(TEST_WORKERS),0)
	$(VENV)/bin/pytest -q
else
	rc=0; \
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder \
		-m "not serial" || rc=$$?; \
	$(VENV)/bin/pytest -q -m serial || rc=$$?; \
	exit $$rc
endif

# ARGS go to bench.run (e.g. ARGS=--quick); SOAK_MINUTES=0 skips the soak;
# BENCH_RTT: the network sets, one table each (RTT in ms through bench.latency; `direct` = no proxy)
SOAK_MINUTES ?= 30
BENCH_RTT ?= 0,20
bench: deps
	$(PY) -m bench.run --rtt $(BENCH_RTT) $(ARGS)
	[ "$(SOAK_MINUTES)" = 0 ] || $(PY) -m bench.soak --minutes $(SOAK_MINUTES)

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy s3encfs
	$(VENV)/bin/lint-imports

# System-wide install from a runtime-only venv in this checkout ($(RUN_VENV): `pip install -e .`,
# no dev or server extras), so keep the checkout. Edited units are kept (the new one goes next to
# them as NAME.s3encfs-new); every file installed is listed for `make uninstall`.
# DESTDIR=/some/root installs into a staging tree instead (no daemon-reload then).
RUN_VENV   ?= .venv-run
RUN_STAMP  := $(RUN_VENV)/.s3encfs-run-stamp
MANDIR     := /usr/local/share/man
COMPDIR    := /usr/local/share/bash-completion/completions
DATADIR    := /usr/local/share/s3encfs
INSTALL_ENV = DESTDIR=$(DESTDIR) BINDIR=$(BINDIR) SBINDIR=$(SBINDIR) UNITDIR=$(PREFIX_UNITS) \
	CONFDIR=$(CONFDIR) DOCDIR=$(DOCDIR) MANDIR=$(MANDIR) COMPDIR=$(COMPDIR) DATADIR=$(DATADIR) \
	VENV=$(abspath $(RUN_VENV))

$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(RUN_VENV)
	$(RUN_VENV)/bin/python -m pip install -q -e .
	touch $(RUN_STAMP)

install: sysdeps $(RUN_STAMP)
	$(INSTALL_ENV) packaging/install.sh install
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		systemctl daemon-reload && echo "systemctl daemon-reload: done"; \
	fi

uninstall:
	$(INSTALL_ENV) packaging/install.sh uninstall
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache *.egg-info
