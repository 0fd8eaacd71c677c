//go:build herald_nopkgconfig

package herald

// go build -tags herald_nopkgconfig: no cgo flags here at all; the caller
// names the header and the library itself, e.g.
//
//	CGO_CFLAGS=-I$PREFIX/include
//	CGO_LDFLAGS="-L$PREFIX/lib -lherald -Wl,-rpath,$PREFIX/lib"
//
// (or "$PREFIX/lib/libherald.a -lgcc_s -lutil -lrt -lpthread -lm -ldl" for
// a static link). For builds without pkg-config or herald.pc.
