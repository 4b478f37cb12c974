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

.PHONY: help deps sysdeps run test bench lint install clean

help:
	@echo "make run     - install deps, start a local S3 server and run the demo (s3encfs.demo)"
	@echo "make test    - install deps and run the test suite (pytest)"
	@echo "make bench   - install deps and run the benchmarks (bench.run)"
	@echo "make lint    - ruff + mypy"
	@echo "make install - link s3encfs + mount helpers from $(VENV), install units and docs"
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

test: deps
	$(VENV)/bin/pytest -q

# ARGS go to bench.run (e.g. ARGS=--quick); SOAK_MINUTES=0 skips the soak
SOAK_MINUTES ?= 30
bench: deps
	$(PY) -m bench.run $(ARGS)
	[ "$(SOAK_MINUTES)" = 0 ] || $(PY) -m bench.soak --minutes $(SOAK_MINUTES)

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy s3encfs

# System-wide install, pointing into this checkout's venv (so keep the checkout).
# DESTDIR=/some/root installs into a staging tree instead (no daemon-reload then).
install: deps
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(PREFIX_UNITS) $(DESTDIR)$(DOCDIR)
	ln -sf $(abspath $(VENV))/bin/s3encfs $(DESTDIR)$(BINDIR)/s3encfs
	@for h in mount.s3encfs mount.fuse.s3encfs; do \
		if [ ! -x $(VENV)/bin/$$h ]; then echo "$(VENV)/bin/$$h missing: rerun make deps"; exit 1; fi; \
		ln -sf $(abspath $(VENV))/bin/$$h $(DESTDIR)$(SBINDIR)/$$h; \
		echo "linked $(DESTDIR)$(SBINDIR)/$$h"; \
	done
	install -d -m 0700 $(DESTDIR)$(CONFDIR) $(DESTDIR)$(CONFDIR)/keys
	install -m 0644 systemd/*.service systemd/*.timer $(DESTDIR)$(PREFIX_UNITS)/
	install -m 0644 docs/SERVICE.md $(DESTDIR)$(DOCDIR)/SERVICE.md
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		systemctl daemon-reload && echo "systemctl daemon-reload: done"; \
	fi
	@echo "installed: $(DESTDIR)$(BINDIR)/s3encfs -> $(abspath $(VENV))/bin/s3encfs"

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache *.egg-info
