//! Building: the kernel object with Debian's toolchain (BRIEF §4), then the
//! userspace binary with the object embedded.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::shell::{cargo, path_with_cargo_bin, run};

/// What a build produced.
pub struct Built {
    pub object: PathBuf,
    pub binary: PathBuf,
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

/// Builds the XDP object from inside `wimark-ha-ebpf`, where its
/// `.cargo/config.toml` picks the target, Debian's rustc and bpf-linker.
pub fn kernel_object(root: &Path) -> Result<PathBuf> {
    let dir = root.join("wimark-ha-ebpf");
    let mut command = Command::new(cargo());
    command
        .current_dir(&dir)
        .args(["build", "--release"])
        .env("PATH", path_with_cargo_bin());
    // Settings meant for the host build must not leak into the BPF one.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTUP_TOOLCHAIN",
    ] {
        command.env_remove(var);
    }
    eprintln!("xtask: building the XDP object (wimark-ha-ebpf, bpfel-unknown-none)");
    run(&mut command)?;
    let object = dir.join("target/bpfel-unknown-none/release/wimark-ha-ebpf");
    if !object.exists() {
        bail!(
            "the eBPF build succeeded but {} is missing",
            object.display()
        );
    }
    Ok(object)
}

/// The environment every host build gets: the object to embed.
pub fn host_env(command: &mut Command, object: &Path) {
    command.env("WIMARK_HA_EBPF_OBJECT", object);
}

/// Builds the object, then `target/release/wimark-ha` and the lab and bench
/// tools with it embedded.
pub fn all(root: &Path) -> Result<Built> {
    let object = kernel_object(root)?;
    let mut command = Command::new(cargo());
    command.current_dir(root).args([
        "build",
        "--release",
        "-p",
        "wimark-ha",
        "-p",
        "wimark-ha-tests",
        "--bins",
    ]);
    host_env(&mut command, &object);
    eprintln!("xtask: building wimark-ha with the XDP object embedded");
    run(&mut command)?;
    let binary = root.join("target/release/wimark-ha");
    eprintln!("xtask: built {}", binary.display());
    Ok(Built { object, binary })
}

/// The Debian package of the binary `all` built (XDP object embedded), with
/// the man page and completions it generates: `cargo deb --no-build`,
/// configured in wimark-ha/Cargo.toml. Its path.
pub fn deb(root: &Path, built: &Built) -> Result<PathBuf> {
    // The man page and completions, from the binary's own command line
    // (the package's assets in wimark-ha/Cargo.toml name them).
    let generated = root.join("target/generated");
    run(Command::new(&built.binary)
        .arg("generate-docs")
        .arg("--out")
        .arg(&generated))?;
    run(Command::new("gzip")
        .args(["-9nf"])
        .arg(generated.join("wimark-ha.8")))?;
    let out_dir = root.join("target/debian");
    let mut command = Command::new(cargo());
    command
        .current_dir(root)
        .args([
            "deb",
            "--no-build",
            "--strip",
            "-p",
            "wimark-ha",
            "--output",
        ])
        .arg(&out_dir);
    command.env("PATH", path_with_cargo_bin());
    host_env(&mut command, &built.object);
    let output = command
        .output()
        .with_context(|| format!("running {command:?} (cargo install cargo-deb)"))?;
    if !output.status.success() {
        bail!(
            "cargo deb failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let path = String::from_utf8_lossy(&output.stdout)
        .lines()
        .rev()
        .find(|l| l.trim().ends_with(".deb"))
        .map(|l| PathBuf::from(l.trim()))
        .context("cargo deb printed no .deb path")?;
    eprintln!("xtask: built {}", path.display());
    Ok(path)
}
