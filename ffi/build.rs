//! Generates the C header from the crate's source with the pinned cbindgen
//! into `OUT_DIR/herald.h`. The committed `include/herald.h` must equal it:
//! `tests/header_fresh.rs` fails otherwise (run it with `HERALD_BLESS=1` to
//! rewrite the committed copy).

use std::env;
use std::path::PathBuf;

fn main() {
    let crate_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("herald.h");
    println!("cargo:rerun-if-changed=src");
    // The shared library's SONAME carries the major version, so programs
    // linked against one major keep loading a compatible one.
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,-soname,libherald.so.{}",
        env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets the version variables")
    );
    println!("cargo:rerun-if-changed=cbindgen.toml");
    let mut config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("ffi/cbindgen.toml parses");
    let v = |k: &str| env::var(k).expect("cargo sets the version variables");
    let version = format!(
        "\n/* Version of the library this header was generated for. */\n\
         #define HERALD_VERSION_MAJOR {}\n#define HERALD_VERSION_MINOR {}\n#define HERALD_VERSION_PATCH {}\n\
         #define HERALD_VERSION_STRING \"{}\"\n",
        v("CARGO_PKG_VERSION_MAJOR"),
        v("CARGO_PKG_VERSION_MINOR"),
        v("CARGO_PKG_VERSION_PATCH"),
        v("CARGO_PKG_VERSION"),
    );
    config.after_includes = Some(version);
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates herald.h")
        .write_to_file(&out);
}
