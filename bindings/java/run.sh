#!/usr/bin/env bash
# Compiles the JVM binding (JNA from Debian's libjna-java) and its test with
# plain javac, and runs the test against target/release/libherald.so.
set -euo pipefail
cd "$(dirname "$0")"
lib="${HERALD_LIB_DIR:-$(cd ../.. && pwd)/target/release}"
jna=/usr/share/java/jna.jar
out=../../target/java
rm -rf "$out" && mkdir -p "$out"
javac -Xlint:all -Werror -cp "$jna" -d "$out" src/dev/herald/*.java test/dev/herald/*.java
java -cp "$out:$jna" -Djna.library.path="$lib" -Djna.nosys=false dev.herald.HeraldTest
