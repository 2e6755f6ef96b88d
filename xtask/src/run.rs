//! Running things that were built: the test suite, the lab, the benchmarks.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

use crate::build::{cargo, host_env, run, Built};

/// Every test of the workspace (unit, BPF_PROG_TEST_RUN, netns integration),
/// in release mode so the test binaries share the build just made. The
/// output is passed through as it comes; at the end one line sums up every
/// test binary's result.
pub fn tests(root: &Path, built: &Built, extra: &[String]) -> Result<()> {
    let mut command = Command::new(cargo());
    command
        .current_dir(root)
        .args(["test", "--release", "--workspace", "--no-fail-fast"]);
    if !extra.is_empty() {
        command.arg("--").args(extra);
    }
    host_env(&mut command, &built.object);
    command
        .env("WIMARK_HA_BIN", &built.binary)
        .stdout(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("running {command:?}"))?;
    let stdout = child.stdout.take().context("test output")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading test output")?;
        println!("{line}");
        let Some(result) = line.strip_prefix("test result: ") else {
            continue;
        };
        for part in result.split([';', '.']) {
            let mut words = part.split_whitespace();
            if let (Some(n), Some(what)) = (words.next(), words.next()) {
                let n: u64 = n.parse().unwrap_or(0);
                match what {
                    "passed" => passed += n,
                    "failed" => failed += n,
                    "ignored" => ignored += n,
                    _ => {}
                }
            }
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    println!("tests: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
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
