//! Test support for wimark-ha: crafted frames, throwaway network-namespace
//! labs, and raw senders. Used by the tests in `tests/`, the lab demo
//! (`cargo xtask lab`) and the benchmarks (`cargo xtask bench`).
//!
//! Every packet sent through this crate stays inside namespaces a [`lab::Lab`]
//! created; nothing here touches the machine's own interfaces.
pub mod ap_clients;
pub mod capture;
pub mod daemon;
pub mod docker;
pub mod etcd;
pub mod failover_lab;
pub mod flag;
pub use wimark_ha_frames as frames;
pub mod keepalived;
pub mod kernel;
pub mod lab;
pub mod soak;
pub mod sockets;
pub mod wire;

use std::path::PathBuf;

/// Fails (never skips) when not root: these tests need namespaces and BPF.
pub fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "{what} needs root (network namespaces, BPF); run the suite with `cargo xtask test` as root"
    );
}

/// The `wimark-ha` binary under test, as built by `cargo xtask build`.
pub fn wimark_ha_bin() -> PathBuf {
    let path = std::env::var_os("WIMARK_HA_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/wimark-ha")
        });
    assert!(
        path.exists(),
        "wimark-ha binary not found at {}: run through `cargo xtask test`, which builds it",
        path.display()
    );
    path
}

/// A scratch directory under the system temp dir, named after the test and
/// the process, removed on drop — also when the test panics.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("wimark-ha-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
