//! Hooks and the notify script: the vendor script's side duties, done
//! right — argv without a shell, awaited with a timeout, every outcome
//! reported (exit code, output), never fire-and-forget.
//!
//! Owns: running one hook or the notify script. Must not: decide whether a
//! failure blocks the switch (the role switcher does, from the config).

use std::time::{Duration, Instant};

use crate::config::{Hook, HookAction, NotifyConfig};

/// What happened when a hook ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub what: String,
    pub ok: bool,
    pub detail: String,
    pub took: Duration,
}

pub async fn run_hook(hook: &Hook) -> Outcome {
    let started = Instant::now();
    match &hook.action {
        HookAction::Remove(pattern) => {
            let (ok, detail) = remove_matching(pattern);
            Outcome {
                what: format!("remove {pattern}"),
                ok,
                detail,
                took: started.elapsed(),
            }
        }
        HookAction::Run(argv) => run(argv, hook.timeout, started).await,
    }
}

fn remove_matching(pattern: &str) -> (bool, String) {
    let paths = match glob::glob(pattern) {
        Ok(paths) => paths,
        Err(e) => return (false, format!("bad pattern: {e}")),
    };
    let mut removed = 0;
    let mut failures = Vec::new();
    for entry in paths {
        match entry {
            Ok(path) => match std::fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) => failures.push(format!("{}: {e}", path.display())),
            },
            Err(e) => failures.push(e.to_string()),
        }
    }
    if failures.is_empty() {
        (true, format!("{removed} file(s) removed"))
    } else {
        (false, failures.join("; "))
    }
}

async fn run(argv: &[String], timeout: Duration, started: Instant) -> Outcome {
    let what = argv.join(" ");
    let mut command = tokio::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    let (ok, detail) = match tokio::time::timeout(timeout, command.output()).await {
        Err(_) => (false, format!("timed out after {timeout:?} (killed)")),
        Ok(Err(e)) => (false, format!("could not start: {e}")),
        Ok(Ok(output)) => {
            let tail = |bytes: &[u8]| {
                let text = String::from_utf8_lossy(bytes);
                let text = text.trim();
                text.chars()
                    .rev()
                    .take(400)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<String>()
            };
            (
                output.status.success(),
                format!(
                    "{}; stdout: {:?}; stderr: {:?}",
                    output.status,
                    tail(&output.stdout),
                    tail(&output.stderr)
                ),
            )
        }
    };
    Outcome {
        what,
        ok,
        detail,
        took: started.elapsed(),
    }
}

/// keepalived's notify convention: `SCRIPT INSTANCE NAME STATE PRIORITY`, or
/// `SCRIPT GROUP NAME STATE PRIORITY` for a sync group.
pub async fn notify(
    config: &NotifyConfig,
    kind: &str,
    name: &str,
    state: &str,
    priority: u8,
) -> Outcome {
    let argv = [
        config.script.display().to_string(),
        kind.to_string(),
        name.to_string(),
        state.to_string(),
        priority.to_string(),
    ];
    run(&argv, config.timeout, Instant::now()).await
}
