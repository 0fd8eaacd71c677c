#!/usr/bin/env bash
# npm's prepack step: bundles the release libherald into
# prebuilds/<platform>-<arch>/ so that the packed tarball works without a
# system install. Build it first: cargo build -p herald-ffi --release.
set -euo pipefail
cd "$(dirname "$0")"
src="${HERALD_LIB:-../../target/release/libherald.so}"
if [ ! -f "$src" ]; then
    echo "prebuild.sh: $src not found; run cargo build -p herald-ffi --release first" >&2
    exit 1
fi
dest="prebuilds/$(node -p 'process.platform + "-" + process.arch')"
rm -rf prebuilds
mkdir -p "$dest"
# The release profile keeps debug info; a package does not need it.
if command -v strip >/dev/null; then
    strip --strip-debug -o "$dest/libherald.so" "$src"
else
    cp "$src" "$dest/libherald.so"
fi
echo "prebuild.sh: $src -> $dest/libherald.so"
