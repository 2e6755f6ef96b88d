//! Running the tools xtask drives: cargo (the one that started us), any
//! command whose failure stops the task, and a PATH that finds what
//! `cargo install` put in ~/.cargo/bin (bpf-linker, cargo-deb, cargo-fuzz).
//!
//! Owns: those three. Must not: know what is built or installed.

use std::{env, path::PathBuf, process::Command};

use anyhow::{bail, Context as _, Result};

pub fn cargo() -> String {
    env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

pub fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("running {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}

/// `$PATH` with `~/.cargo/bin` (where `cargo install` puts bpf-linker).
pub fn path_with_cargo_bin() -> String {
    let mut path = env::var("PATH").unwrap_or_default();
    if let Some(bin) = cargo_bin() {
        path = format!("{}:{path}", bin.display());
    }
    path
}

fn cargo_bin() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin"))
}
