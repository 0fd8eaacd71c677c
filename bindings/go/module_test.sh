#!/usr/bin/env bash
# Uses the binding the way a program outside the repository does: libherald
# installed with scripts/install into a temporary prefix, a copy of this
# module (no repository around it) required through a replace directive
# (there is no module proxy), cgo flags from pkg-config. The program
# publishes an event and receives it; it is built shared, with an rpath
# from -ldflags=-r, and with -tags herald_static, and each binary is run
# without LD_LIBRARY_PATH. The quickstart example of the copy is built with
# the CGO_LDFLAGS rpath instead, and run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$repo/scripts/install" --prefix "$work/prefix" >/dev/null

mkdir "$work/herald-go" "$work/app"
cp -R "$here/." "$work/herald-go/"

cat >"$work/app/go.mod" <<'MOD'
module example.com/heraldapp

go 1.19

require github.com/herald-events/herald/bindings/go v0.1.0

replace github.com/herald-events/herald/bindings/go => ../herald-go
MOD
cat >"$work/app/main.go" <<'GO'
package main

import (
	"fmt"
	"os"
	"time"

	herald "github.com/herald-events/herald/bindings/go"
)

func main() {
	if herald.Version() != herald.HeaderVersion {
		fail(fmt.Errorf("library %s, header %s", herald.Version(), herald.HeaderVersion))
	}
	b, err := herald.Open(herald.Config{DataDir: os.Args[1]})
	fail(err)
	defer b.Close()
	s, err := b.OpenSubscriber(herald.Filter{Topics: []string{"app.events"}}, herald.StartNow())
	fail(err)
	defer s.Close()
	p, err := b.Publisher("app.events")
	fail(err)
	defer p.Close()
	sent, err := p.PublishOpts("app.hello", []byte("from outside"), herald.PublishOptions{Correlation: "app-1"})
	fail(err)
	e, err := s.Next(5 * time.Second)
	fail(err)
	if e.Seq != sent.Seq || e.Type != "app.hello" || string(e.Payload) != "from outside" || e.Correlation != "app-1" {
		fail(fmt.Errorf("received %+v, sent %+v", e, sent))
	}
	fmt.Printf("app: received #%d %s %q (correlation %s)\n", e.Seq, e.Type, e.Payload, e.Correlation)
}

func fail(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "app:", err)
		os.Exit(1)
	}
}
GO

export GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod CGO_ENABLED=1
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
unset CGO_CFLAGS CGO_LDFLAGS LD_LIBRARY_PATH
libdir="$(pkg-config --variable=libdir herald)"
cd "$work/app"

echo "go module: vet the copy (pkg-config, herald_static)"
(cd "$work/herald-go" && go vet ./... && go vet -tags herald_static ./...)

echo "go module: shared, rpath from -ldflags=-r"
go build -ldflags="-r $libdir" -o app-shared .
readelf -d app-shared | grep -q 'NEEDED.*\[libherald.so.0\]' ||
    { echo "app-shared does not need libherald.so.0" >&2; exit 1; }
readelf -d app-shared | grep -Eq "(RPATH|RUNPATH).*\[$libdir\]" ||
    { echo "app-shared has no rpath to $libdir" >&2; exit 1; }
./app-shared "$work/data-shared"

echo "go module: static (-tags herald_static)"
go build -tags herald_static -o app-static .
if readelf -d app-static | grep -q libherald; then
    echo "app-static needs libherald at run time" >&2; exit 1
fi
./app-static "$work/data-static"

echo "go module: quickstart example, rpath from CGO_LDFLAGS"
(cd "$work/herald-go" && CGO_LDFLAGS="-Wl,-rpath,$libdir" go build -o "$work/quickstart" ./examples/quickstart)
"$work/quickstart" >/dev/null
echo "go module: outside module built against the install ran (shared, static, example)"
