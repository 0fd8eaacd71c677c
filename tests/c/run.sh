#!/usr/bin/env bash
# Builds and runs the C host test against target/release/libherald.so with
# AddressSanitizer and UndefinedBehaviorSanitizer. Needs
# `cargo build -p herald-ffi --release` first.
set -euo pipefail
cd "$(dirname "$0")/../.."
lib="${HERALD_LIB_DIR:-$PWD/target/release}"
out="$PWD/target/c-tests"
mkdir -p "$out"
# Programs linked with -lherald load it by its SONAME (libherald.so.MAJOR).
ln -sfn libherald.so "$lib/libherald.so.0"
gcc -std=c11 -Wall -Wextra -Werror -g -O1 -fno-omit-frame-pointer \
    -fsanitize=address,undefined -fno-sanitize-recover=all \
    -Iinclude tests/c/herald_test.c -L"$lib" -lherald -lpthread -o "$out/herald_test"
# A C++ compiler must accept the header too (cpp_compat).
if command -v g++ >/dev/null 2>&1; then
    printf '#include <herald.h>\nint main() { return herald_version() == nullptr; }\n' |
        g++ -x c++ -std=c++17 -Wall -Werror -Iinclude - -L"$lib" -lherald -o "$out/herald_cxx"
fi
LD_LIBRARY_PATH="$lib" ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$out/herald_test"
# The same test without sanitizers under Valgrind's memcheck: reads of
# uninitialised memory (which the sanitizers do not see) and definite leaks
# fail it.
if command -v valgrind >/dev/null 2>&1; then
    gcc -std=c11 -Wall -Wextra -Werror -g -O1 -Iinclude tests/c/herald_test.c \
        -L"$lib" -lherald -lpthread -o "$out/herald_test_memcheck"
    LD_LIBRARY_PATH="$lib" valgrind -q --error-exitcode=1 --leak-check=full \
        --errors-for-leak-kinds=definite "$out/herald_test_memcheck" | tail -1
else
    echo "skipped memcheck: valgrind is not installed"
fi
# The C example of docs/EMBEDDING.md is this program: built, run, and the
# copy in the docs kept identical.
gcc -std=c11 -Wall -Wextra -Werror -g -fsanitize=address,undefined -fno-sanitize-recover=all \
    -Iinclude tests/c/examples/quickstart.c -L"$lib" -lherald -o "$out/quickstart"
LD_LIBRARY_PATH="$lib" "$out/quickstart" >"$out/quickstart.out"
grep -q '^#2 order.created {"id":2}$' "$out/quickstart.out" || { cat "$out/quickstart.out"; exit 1; }
rm -rf /tmp/herald-quickstart-*
python3 - <<'PY'
import re, sys
doc = open("docs/EMBEDDING.md").read()
code = open("tests/c/examples/quickstart.c").read()
block = re.search(r"## C\n.*?```c\n(.*?)```\n", doc, re.S)
if not block or block.group(1) != code:
    sys.exit("docs/EMBEDDING.md's C example differs from tests/c/examples/quickstart.c")
PY
echo "C example: built, ran, and matches docs/EMBEDDING.md"
