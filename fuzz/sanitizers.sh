#!/bin/sh
# Run fuzz/harness.py on a copy of vmascope whose C extension (_fastparse) is built with
# AddressSanitizer and UndefinedBehaviorSanitizer (gcc). Any memory error or undefined
# behaviour in the parser aborts the run with the sanitizer's report.
#   sh fuzz/sanitizers.sh [harness arguments, e.g. --n 20000 --target maps]
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
CC=${CC:-gcc}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/vmascope-asan-XXXXXX")
trap 'rm -rf "$TMP"' EXIT INT TERM
cp -r "$ROOT/src/vmascope" "$TMP/vmascope"
find "$TMP/vmascope" -name '_fastparse*.so' -delete
SUFFIX=$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
INC=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
"$CC" -shared -fPIC -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
    -fno-sanitize-recover=undefined -I"$INC" \
    "$ROOT/src/vmascope/procfs/_fastparse.c" -o "$TMP/vmascope/procfs/_fastparse$SUFFIX"
ASAN=$("$CC" -print-file-name=libasan.so)
UBSAN=$("$CC" -print-file-name=libubsan.so)
# Python itself leaks by design at exit: leak checking off; everything else aborts.
VMASCOPE_SRC="$TMP" VMASCOPE_SANITIZED=1 LD_PRELOAD="$ASAN $UBSAN" \
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$PY" "$ROOT/fuzz/harness.py" "$@"
