//! Running things that were built: the test suite, the lab, the benchmarks.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

use crate::{
    build::{host_env, Built},
    shell::{cargo, path_with_cargo_bin, run},
};

/// Every test of the workspace (unit, BPF_PROG_TEST_RUN, netns integration),
/// in release mode so the test binaries share the build just made. The
/// output is passed through as it comes; at the end one line sums up every
/// test binary's result.
pub fn tests(root: &Path, built: &Built, deb: &Path, extra: &[String]) -> Result<()> {
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
        .env("WIMARK_HA_DEB", deb)
        .stdout(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("running {command:?}"))?;
    let stdout = child.stdout.take().context("test output")?;
    // Lines come from a reader thread: a process a test leaked could hold
    // the pipe open after cargo exits, and must not hang the run.
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    let mut tally = |line: &str| {
        println!("{line}");
        let Some(result) = line.strip_prefix("test result: ") else {
            return;
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
    };
    loop {
        match lines.recv_timeout(std::time::Duration::from_millis(200)) {
            Ok(line) => tally(&line),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if child
                    .try_wait()
                    .context("waiting for cargo test")?
                    .is_some()
                {
                    // cargo is done; take what is buffered, then stop.
                    while let Ok(line) = lines.recv_timeout(std::time::Duration::from_secs(2)) {
                        tally(&line);
                    }
                    break;
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

/// The `cargo fuzz` targets (in `fuzz/`), each for `seconds`, built without
/// a sanitizer so the stable toolchain will do; libFuzzer's RSS and malloc
/// limits turn unbounded allocation into a failure. Fails on any crash.
pub fn fuzz(root: &Path, seconds: u64) -> Result<()> {
    for target in ["decode_packet", "parse_config"] {
        let mut command = Command::new(cargo());
        command
            .current_dir(root.join("fuzz"))
            .args(["fuzz", "run", "--sanitizer", "none", target, "--"])
            .arg(format!("-max_total_time={seconds}"))
            .args([
                "-rss_limit_mb=1024",
                "-malloc_limit_mb=256",
                "-print_final_stats=1",
            ])
            .env("PATH", path_with_cargo_bin());
        let output = command
            .output()
            .with_context(|| format!("running {command:?} (cargo install cargo-fuzz)"))?;
        let log = String::from_utf8_lossy(&output.stderr);
        let runs = log
            .lines()
            .find_map(|l| l.strip_prefix("Done ").and_then(|r| r.split(' ').next()))
            .unwrap_or("?")
            .to_string();
        if !output.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            bail!(
                "fuzz target {target} failed ({}); the input is under fuzz/artifacts/{target}/:\n{}",
                output.status,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        println!("fuzz: {target}: {runs} inputs in {seconds} s, no crash, no runaway allocation");
    }
    Ok(())
}
