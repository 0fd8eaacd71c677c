#!/usr/bin/env bash
# Builds the jar (build.sh), compiles the binding's tests against it and runs
# them with plain java (the library comes from the jar, no library path),
# runs the jar as a user would (jar_test.sh: the examples, outside the
# repository), and checks that every Java code block of the docs is one of
# the examples, verbatim.
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

# Docs: README.md and the JVM section of docs/EMBEDDING.md.
blocks="$root/target/java/doc-blocks"
rm -rf "$blocks" && mkdir -p "$blocks"
awk -v dir="$blocks" '
    FILENAME ~ /EMBEDDING/ && /^## / { jvm = ($0 ~ /^## JVM/) }
    FILENAME ~ /EMBEDDING/ && !jvm { next }
    /^```java$/ { n++; f = dir "/" n ".java"; inblock = 1; next }
    /^```$/ && inblock { inblock = 0; close(f); next }
    inblock { print > f }
' "$here/README.md" "$root/docs/EMBEDDING.md"
found=0
for b in "$blocks"/*.java; do
    [[ -e "$b" ]] || continue
    found=$((found + 1))
    match=
    while IFS= read -r -d '' ex; do
        if cmp -s "$b" "$ex"; then match="$ex"; break; fi
    done < <(find "$here/examples" -name '*.java' -print0)
    [[ -n "$match" ]] || { echo "docs: a Java block is not one of bindings/java/examples:" >&2; cat "$b" >&2; exit 1; }
done
((found > 0)) || { echo "docs: no Java block found" >&2; exit 1; }
echo "docs: $found Java blocks, each an example run by jar_test.sh"
