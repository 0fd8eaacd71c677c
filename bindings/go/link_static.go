//go:build herald_static && !herald_nopkgconfig

package herald

// go build -tags herald_static: libherald.a linked into the program, which
// then needs no libherald at run time. -Bstatic makes the linker take the
// archive although libherald.so sits next to it; --as-needed keeps the
// -lherald that pkg-config also prints (already satisfied by the archive)
// from adding libherald.so.0 to the program's dependencies. pkg-config
// --static adds the system libraries the Rust archive needs (Libs.private).

// #cgo LDFLAGS: -Wl,-Bstatic -lherald -Wl,-Bdynamic -Wl,--as-needed
// #cgo pkg-config: --static herald
import "C"
