//go:build !herald_static && !herald_nopkgconfig

package herald

// The default: compiler and linker flags of an installed libherald from
// pkg-config (herald.pc; set PKG_CONFIG_PATH for a non-standard prefix).
// The program then loads libherald.so.0 at run time: install it where the
// loader looks, or record its directory in the binary with
// go build -ldflags="-r $(pkg-config --variable=libdir herald)".

// #cgo pkg-config: herald
import "C"
