#!/bin/sh
# Coverage-guided fuzzing of the C extension itself: atheris on a copy of vmascope whose
# _fastparse is built by clang with -fsanitize=fuzzer-no-link (libFuzzer sees the C
# parser's edges) plus AddressSanitizer and UndefinedBehaviorSanitizer.
#   sh fuzz/atheris_native.sh TARGET [atheris_fuzz.py arguments, e.g. --runs 100000]
# Needs clang and its runtime libraries (Debian: clang libclang-rt-dev).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
RT=$(clang -print-runtime-dir)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/vmascope-native-XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM
# libFuzzer as a shared library, loaded first: its coverage callbacks are the ones the
# instrumented extension calls, and atheris then runs on it (core_without_libfuzzer).
clang -shared -o "$TMP/libfuzzer.so" -Wl,--whole-archive "$RT/libclang_rt.fuzzer_no_main-x86_64.a" \
    -Wl,--no-whole-archive -lstdc++ -lpthread -lm
cp -r "$ROOT/src/vmascope" "$TMP/vmascope"
find "$TMP/vmascope" -name '_fastparse*.so' -delete
SUFFIX=$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
INC=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
clang -shared -fPIC -O1 -g -fno-omit-frame-pointer \
    -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -shared-libasan \
    -I"$INC" "$ROOT/src/vmascope/procfs/_fastparse.c" -o "$TMP/vmascope/procfs/_fastparse$SUFFIX"
# ASan's own (no-op) coverage callbacks must not win over libFuzzer's: libFuzzer goes
# first, so ASan's link-order check is off. Leak checking is off (the interpreter keeps
# memory until exit by design); the RSS limit allows for ASan's shadow and quarantine.
TARGET=$1
shift
VMASCOPE_SRC="$TMP" LD_PRELOAD="$TMP/libfuzzer.so $RT/libclang_rt.asan-x86_64.so" \
ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:verify_asan_link_order=0:quarantine_size_mb=64 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$PY" "$ROOT/fuzz/atheris_fuzz.py" "$TARGET" --rss-limit-mb 2048 "$@"
