# Two set-up commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Debian packages the tests use (installed through apt-get when run as root).
APT_PACKAGES := build-essential procps qemu-system-x86 cpio zstd binutils \
                chromium default-jdk-headless nodejs gpg golang-go mono-runtime \
                mono-mcs libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4 libgc1 \
                clang libclang-rt-dev prometheus tmux sqlite3 \
                libbpf-dev bpftool libelf-dev zlib1g-dev strace

.PHONY: demo test venv apt bench fuzz clean

$(VENV)/.installed: pyproject.toml setup.py $(wildcard src/vmascope/*/*.c)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# The modules' bytecode, compiled ahead (as a non-editable install would be), also where
# the environment says PYTHONDONTWRITEBYTECODE: every command would otherwise compile
# the modules it imports, 25-45 ms at each start. Up-to-date files are left as they are.
venv: $(VENV)/.installed
	@$(PY) -m compileall -q src/vmascope >/dev/null

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
# contract and memory checks, the large inputs, atheris (coverage-guided, on the C
# extension built with ASan and UBSan when clang is there), the harness again on a gcc
# ASan+UBSan build, and the trials. `make test` runs a short sample of each.
FUZZ_N ?= 100000
ATHERIS_N ?= 50000
ASAN_N ?= 20000
fuzz: venv apt
	$(PY) fuzz/harness.py --n $(FUZZ_N) --big
	for t in maps smaps numa_maps snapshot; do \
	  if command -v clang >/dev/null; then sh fuzz/atheris_native.sh $$t --runs $(ATHERIS_N) || exit 1; \
	  else $(PY) fuzz/atheris_fuzz.py $$t --runs $(ATHERIS_N) || exit 1; fi; done
	$(PY) fuzz/atheris_fuzz.py ops --runs $(ATHERIS_N)
	sh fuzz/sanitizers.sh --n $(ASAN_N)
	$(PY) fuzz/trials.py vanishing --n 1000
	$(PY) fuzz/trials.py signals --n 200

clean:
	rm -rf $(VENV) build src/*.egg-info src/vmascope/*.so src/vmascope/*/*.so
	find src -name __pycache__ -type d -prune -exec rm -rf {} +
