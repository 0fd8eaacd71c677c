#!/usr/bin/env bash
# Builds target/java/herald-<version>.jar (version of the workspace
# Cargo.toml): the named module dev.herald, with the release libherald.so
# bundled at JNA's resource path (linux-x86-64/libherald.so), so that users
# need nothing but the jar and JNA. Plain javac + jar.
#   bindings/java/build.sh    (HERALD_LIB_DIR: take libherald.so from there
#                              instead of building target/release)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
jna=/usr/share/java/jna.jar
version="$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$root/Cargo.toml")"
[[ -n "$version" ]] || { echo "build.sh: no version in $root/Cargo.toml" >&2; exit 1; }
if [[ -z "${HERALD_LIB_DIR:-}" ]]; then
    (cd "$root" && cargo build -p herald-ffi --release --locked)
fi
lib="${HERALD_LIB_DIR:-$root/target/release}/libherald.so"
# JNA's resource prefix for this platform (com.sun.jna.Platform.RESOURCE_PREFIX).
case "$(uname -m)" in
    x86_64) prefix=linux-x86-64 ;;
    aarch64) prefix=linux-aarch64 ;;
    *) echo "build.sh: no JNA resource prefix known for $(uname -m)" >&2; exit 1 ;;
esac
out="$root/target/java"
classes="$out/classes"
rm -rf "$classes" "$out"/herald-*.jar && mkdir -p "$classes/$prefix"
# Debian's jna.jar is an automatic module (Automatic-Module-Name com.sun.jna,
# no module-info): requiring it is the only way, so those two lints are off.
javac -Xlint:all,-requires-automatic,-requires-transitive-automatic -Werror \
    --module-path "$jna" -d "$classes" $(find "$root/bindings/java/src" -name '*.java')
cp "$lib" "$classes/$prefix/libherald.so"
printf 'Implementation-Title: dev.herald\nImplementation-Version: %s\n' "$version" >"$out/manifest.txt"
jar --create --file "$out/herald-$version.jar" --module-version "$version" \
    --manifest "$out/manifest.txt" -C "$classes" .
echo "$out/herald-$version.jar"
