//! Embeds the XDP kernel object built by `cargo xtask build`.
//!
//! xtask builds `wimark-ha-ebpf` with Debian's toolchain and passes the object's
//! path in `WIMARK_HA_EBPF_OBJECT`. Without it (a plain `cargo check`, `cargo
//! clippy`, or unit tests) an empty object is embedded and any command that
//! needs the kernel side says how to build it properly.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=WIMARK_HA_EBPF_OBJECT");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target = out.join("wimark-ha-ebpf.o");
    match env::var_os("WIMARK_HA_EBPF_OBJECT") {
        Some(path) => {
            let path = PathBuf::from(path);
            println!("cargo:rerun-if-changed={}", path.display());
            let bytes = fs::read(&path)
                .unwrap_or_else(|e| panic!("WIMARK_HA_EBPF_OBJECT={}: {e}", path.display()));
            fs::write(&target, bytes).expect("write the embedded object to OUT_DIR");
        }
        None => fs::write(&target, []).expect("write the empty object stub to OUT_DIR"),
    }
}
