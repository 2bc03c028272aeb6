# Two set-up commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Debian packages the tests use (installed through apt-get when run as root).
APT_PACKAGES := build-essential procps qemu-system-x86 cpio zstd binutils \
                chromium default-jdk-headless nodejs gpg golang-go mono-runtime \
                mono-mcs libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4 libgc1 \
                prometheus tmux sqlite3

.PHONY: demo test venv apt bench fuzz clean

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

apt:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    echo "apt-get install $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	else echo "not root: skipping apt-get (tests that need those packages will skip)"; fi

demo: venv
	$(VENV)/bin/vmascope demo

test: venv apt
	$(PY) -m pytest -q

bench: venv
	$(PY) bench/run.py

# The fuzz harnesses (docs/reliability.md): 100,000 mutated inputs per parser with the
# contract and memory checks, the large inputs, atheris (coverage-guided), and the
# harness again on an ASan+UBSan build of the C extension. `make test` runs a sample.
FUZZ_N ?= 100000
ATHERIS_N ?= 20000
ASAN_N ?= 20000
fuzz: venv
	$(PY) fuzz/harness.py --n $(FUZZ_N) --big
	for t in maps smaps numa_maps snapshot ops; do \
	  $(PY) fuzz/atheris_fuzz.py $$t --runs $(ATHERIS_N) || exit 1; done
	sh fuzz/sanitizers.sh --n $(ASAN_N)

clean:
	rm -rf $(VENV) build src/*.egg-info src/vmascope/*.so src/vmascope/*/*.so
