#!/usr/bin/env bash
# Uses the jar as a user would: copies target/java/herald-<version>.jar and
# the programs of examples/ into a temp dir outside the repository, compiles
# them against that jar and Debian's jna.jar alone, and runs them without
# jna.library.path, LD_LIBRARY_PATH or HERALD_LIB_DIR, so that libherald.so
# can only come from the jar. Each program publishes events and checks that
# it receives them; this script checks what they print. Run build.sh first
# (run.sh does).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
jna=/usr/share/java/jna.jar
version="$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$root/Cargo.toml")"
jar="herald-$version.jar"
fail() { echo "jar_test: $*" >&2; exit 1; }
[[ -f "$root/target/java/$jar" ]] || fail "no target/java/$jar: run bindings/java/build.sh first"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp "$root/target/java/$jar" "$tmp/"
cp -r "$here/examples" "$tmp/src"
cd "$tmp"
# Nothing from the environment may point JNA or the JVM at another library.
run() { env -u LD_LIBRARY_PATH -u HERALD_LIB_DIR -u JAVA_TOOL_OPTIONS -u JDK_JAVA_OPTIONS \
    java -Djna.tmpdir="$tmp/jna" "$@"; }

echo "jar_test: class path (examples/Quickstart.java)"
javac -Xlint:all -Werror -cp "$jar:$jna" -d classes src/Quickstart.java
out="$(run -cp "classes:$jar:$jna" Quickstart)"
want=$'1 order.created {"id":1} correlation=req-1\n2 order.created {"id":2} correlation='
[[ "$out" == "$want" ]] || fail "Quickstart printed:"$'\n'"$out"

echo "jar_test: module path (examples/modular, module app requires dev.herald)"
javac -Xlint:all -Werror --module-path "$jar:$jna" -d mods/app src/modular/module-info.java src/modular/app/App.java
run -Djna.debug_load=true --module-path "mods:$jar:$jna" -m app/app.App >app.out 2>app.err \
    || fail "App failed:"$'\n'"$(cat app.out app.err)"
want="library $version
received app.greetings greeting hello correlation=trace-42
checkpoint 1"
[[ "$(cat app.out)" == "$want" ]] || fail "App printed:"$'\n'"$(cat app.out)"
# JNA's load log: the library was the jar's, not one found on the system.
grep -qF "Found library resource at jar:file://$tmp/$jar!/linux-x86-64/libherald.so" app.err \
    || fail "libherald.so did not come from the jar:"$'\n'"$(cat app.err)"
# JNA extracted it to jna.tmpdir and removed it at exit.
[[ -d jna && -z "$(ls -A jna)" ]] || fail "extracted library left behind: $(ls -A jna 2>&1)"
echo "jar_test: ok"
