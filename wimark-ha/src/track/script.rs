//! A script tracker's runner: keepalived's `vrrp_script`, one run at a time.
//!
//! Owns: starting the script every interval (never two at once: a run
//! that outlasts its interval delays the next), killing it and its process
//! group at the timeout, and its output in the log. Must not: count rises
//! and falls (the tracker does, from each run reported).

use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt as _};

use super::Observation;
use crate::{
    config::ScriptTrack,
    storm::{more, Storm},
};

/// The output kept of each stream of a run, for the log.
const OUTPUT_KEPT: u64 = 4096;

/// A check that keeps failing is logged at most this often (with a count).
const FAILURES_LOGGED_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `script` forever, reporting each run. Dropped (aborted), the child
/// running at that moment is killed.
pub async fn run(
    instance: String,
    name: String,
    script: ScriptTrack,
    report: impl Fn(Observation),
) {
    let mut ticks = tokio::time::interval(script.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_success = None;
    let mut failures = Storm::new(FAILURES_LOGGED_EVERY);
    loop {
        ticks.tick().await;
        let (success, detail, output) = run_once(&script).await;
        // The output goes to the log when the result changes, and a failing
        // check says why — at once, then at most once a minute with a count
        // (a check failing every 100 ms for hours is one line a minute); a
        // steady success is quiet.
        let changed = last_success != Some(success);
        let output = output.trim();
        if success && changed {
            tracing::info!(%instance, tracker = %name, %detail, output, "track script ran");
        } else if !success {
            if changed {
                failures = Storm::new(FAILURES_LOGGED_EVERY);
            }
            if let Some(unlogged) = failures.occurred(std::time::Instant::now()) {
                tracing::warn!(%instance, tracker = %name, %detail, output, "track script failed{}", more(unlogged));
            }
        }
        last_success = Some(success);
        report(Observation::Run { success, detail });
    }
}

/// One run: (exit 0, how it ended, its output).
async fn run_once(script: &ScriptTrack) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(&script.argv[0]);
    command
        .args(&script.argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so the timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return (false, format!("did not start: {e}"), String::new()),
    };
    let group = child.id();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let finished = async {
        let (out, err, status) = tokio::join!(keep_some(stdout), keep_some(stderr), child.wait());
        (out, err, status)
    };
    match tokio::time::timeout(script.timeout, finished).await {
        Ok((out, err, status)) => {
            let output = [out, err].join("");
            match status {
                Ok(status) if status.success() => (true, "exit status 0".to_string(), output),
                Ok(status) => (false, describe(status), output),
                Err(e) => (false, format!("could not be waited for: {e}"), output),
            }
        }
        Err(_) => {
            if let Some(group) = group {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(group as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            (
                false,
                format!("killed after its timeout of {:?}", script.timeout),
                String::new(),
            )
        }
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// The first [`OUTPUT_KEPT`] bytes of a stream; the rest is read and
/// dropped, so a chatty script neither blocks on a full pipe nor fills our
/// memory.
async fn keep_some(stream: Option<impl AsyncRead + Unpin>) -> String {
    let Some(mut stream) = stream else {
        return String::new();
    };
    let mut kept = Vec::new();
    let _ = (&mut stream).take(OUTPUT_KEPT).read_to_end(&mut kept).await;
    let _ = tokio::io::copy(&mut stream, &mut tokio::io::sink()).await;
    String::from_utf8_lossy(&kept).into_owned()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn script(argv: &[&str], timeout: Duration) -> ScriptTrack {
        ScriptTrack {
            argv: argv.iter().map(|a| a.to_string()).collect(),
            interval: Duration::from_millis(50),
            timeout,
            rise: 1,
            fall: 1,
            init_fail: false,
        }
    }

    #[tokio::test]
    async fn a_run_is_judged_by_its_exit_status_and_a_hang_is_killed() {
        let ok = run_once(&script(
            &["/bin/sh", "-c", "echo fine"],
            Duration::from_secs(5),
        ))
        .await;
        assert_eq!(
            ok,
            (true, "exit status 0".to_string(), "fine\n".to_string())
        );
        let failed = run_once(&script(
            &["/bin/sh", "-c", "echo bad >&2; exit 3"],
            Duration::from_secs(5),
        ))
        .await;
        assert_eq!(
            failed,
            (false, "exit status 3".to_string(), "bad\n".to_string())
        );
        let missing = run_once(&script(&["/nonexistent/chk"], Duration::from_secs(5))).await;
        assert!(
            !missing.0 && missing.1.starts_with("did not start"),
            "{missing:?}"
        );
        // A hang, with a child of its own holding the pipe: both killed at
        // the timeout, and the run counts as failed.
        let started = std::time::Instant::now();
        let hung = run_once(&script(
            &["/bin/sh", "-c", "sleep 30 & sleep 30"],
            Duration::from_millis(200),
        ))
        .await;
        assert!(
            !hung.0 && hung.1.starts_with("killed after its timeout"),
            "{hung:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
