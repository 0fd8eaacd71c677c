#!/usr/bin/env bash
# Installs libherald into a temporary prefix with scripts/install and builds
# a C program outside the repository against it, the way a user would:
# pkg-config for the shared library (found through its SONAME and an rpath,
# no LD_LIBRARY_PATH), and the static archive.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$repo/scripts/install" --prefix "$work/prefix" >/dev/null
cp "$repo/tests/c/install/app.c" "$work/"
cd "$work"
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
libdir="$(pkg-config --variable=libdir herald)"
# Shared: NEEDED names the SONAME, the rpath finds it.
cc -std=c11 -Wall -Werror app.c $(pkg-config --cflags --libs herald) -Wl,-rpath,"$libdir" -o app-shared
readelf -d app-shared | grep -q 'NEEDED.*\[libherald.so.0\]' || { echo "app-shared does not need libherald.so.0" >&2; exit 1; }
env -u LD_LIBRARY_PATH ./app-shared "$work/data-shared"
# Static: no libherald at run time at all.
cc -std=c11 -Wall -Werror app.c $(pkg-config --cflags herald) "$libdir/libherald.a" \
    $(pkg-config --static --libs-only-l herald | sed 's/-lherald//') -o app-static
if readelf -d app-static | grep -q libherald; then echo "app-static needs libherald" >&2; exit 1; fi
env -u LD_LIBRARY_PATH ./app-static "$work/data-static"
echo "install: shared and static programs built with pkg-config ran"
