//! Running things that were built: the test suite, the lab, the benchmarks.

use std::{path::Path, process::Command};

use anyhow::Result;

use crate::build::{cargo, host_env, run, Built};

/// Every test of the workspace (unit, BPF_PROG_TEST_RUN, netns integration),
/// in release mode so the test binaries share the build just made.
pub fn tests(root: &Path, built: &Built, extra: &[String]) -> Result<()> {
    let mut command = Command::new(cargo());
    command
        .current_dir(root)
        .args(["test", "--release", "--workspace"]);
    if !extra.is_empty() {
        command.arg("--").args(extra);
    }
    host_env(&mut command, &built.object);
    command.env("WIMARK_HA_BIN", &built.binary);
    run(&mut command)
}

/// One of the tools of the `tests` crate (lab, bench).
pub fn tool(root: &Path, built: &Built, name: &str, args: &[String]) -> Result<()> {
    let mut command = Command::new(root.join("target/release").join(name));
    command
        .current_dir(root)
        .args(args)
        .env("WIMARK_HA_BIN", &built.binary);
    run(&mut command)
}
