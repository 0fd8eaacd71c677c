#!/usr/bin/env bash
# Builds the jar (build.sh), compiles the binding's tests against it and runs
# them with plain java (the library comes from the jar, no library path),
# runs the jar as a user would (jar_test.sh: the examples, outside the
# repository).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
jna=/usr/share/java/jna.jar
jar="$("$here/build.sh" | tail -n 1)"
out="$root/target/java/test"
rm -rf "$out" && mkdir -p "$out"
javac -Xlint:all -Werror -cp "$jar:$jna" -d "$out" "$here"/test/dev/herald/*.java
java -cp "$out:$jar:$jna" dev.herald.HeraldTest

"$here/jar_test.sh"

