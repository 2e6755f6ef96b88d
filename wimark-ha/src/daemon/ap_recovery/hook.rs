//! The IKE hook of a takeover's recovery: run with the AP list as JSON on
//! stdin, its per-AP lines counted as they come, killed at its timeout or
//! when the instance leaves MASTER, what it printed kept either way.
//!
//! Owns: the hook process of one recovery. Must not: retry it, or decide
//! when a recovery stops (the observer says so).

use super::*;

/// Why a recovery ended early.
pub(super) const STOPPED: &str = "stopped: the instance left MASTER";

/// Completes when `stop` turns true; never when its sender is gone without
/// saying so (the recovery then runs to its end).
pub(super) async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs a recovery hook with `list` as JSON on stdin; its stdout lines are
/// [`ApOutcome`]s (what `wimark-ha ike-initiate` prints as each AP ends).
/// Killed at `timeout`, never retried; what it reported before the kill
/// counts, and the report says how many APs it left unreported.
pub async fn run_hook(
    argv: &[String],
    timeout: Duration,
    list: &ApList,
    stop: impl std::future::Future<Output = ()>,
) -> HookReport {
    let started = Instant::now();
    let mut report = HookReport::default();
    let input = match serde_json::to_vec(list) {
        Ok(input) => input,
        Err(e) => {
            report.error = Some(format!("encoding the AP list: {e}"));
            return report;
        }
    };
    match crate::hooks::run_process_keeping_output_until(argv, Some(&input), timeout, stop).await {
        Err(e) => report.error = Some(e.to_string()),
        Ok(output) => {
            for line in String::from_utf8_lossy(&output.stdout).lines() {
                let Ok(outcome) = serde_json::from_str::<ApOutcome>(line) else {
                    continue;
                };
                if outcome.ok {
                    report.ok += 1;
                } else {
                    report.failed += 1;
                    if outcome.result == Some(ApResult::TimedOut) {
                        report.timed_out += 1;
                    }
                    if report.failures.len() < FAILURES_KEPT {
                        report.failures.push(format!(
                            "{}: {}",
                            outcome.address,
                            outcome.error.unwrap_or_default()
                        ));
                    }
                }
            }
            let reported = report.ok + report.failed;
            match output.status {
                None if output.stopped => {
                    report.error = Some(format!(
                        "{STOPPED} after {:?} (killed) with {reported} of {} APs reported",
                        started.elapsed(),
                        list.aps.len()
                    ))
                }
                None => {
                    report.error = Some(format!(
                        "timed out after {timeout:?} (killed) with {reported} of {} APs reported",
                        list.aps.len()
                    ))
                }
                Some(status) if !status.success() && reported < list.aps.len() => {
                    let tail = crate::hooks::output_tail(&output.stderr, 300);
                    report.error = Some(format!("{status}; stderr: {tail:?}"));
                }
                Some(_) => {}
            }
        }
    }
    report.took_ms = started.elapsed().as_secs_f64() * 1e3;
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::ApEntry;

    /// A hook written as a shell script.
    fn sh(script: &str) -> [String; 3] {
        ["/bin/sh".to_string(), "-c".to_string(), script.to_string()]
    }

    fn list(addresses: &[&str]) -> ApList {
        ApList {
            aps: addresses
                .iter()
                .map(|a| ApEntry {
                    address: a.to_string(),
                    ike_port: None,
                    ike_id: None,
                })
                .collect(),
            ..ApList::default()
        }
    }

    #[tokio::test]
    async fn a_hook_that_hangs_is_killed_at_its_timeout() {
        let argv = ["/bin/sleep".to_string(), "10".to_string()];
        let started = Instant::now();
        let report = run_hook(
            &argv,
            Duration::from_millis(200),
            &list(&["10.0.0.1"]),
            std::future::pending(),
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(2), "{report:?}");
        assert!(
            report
                .error
                .as_deref()
                .is_some_and(|e| e.contains("timed out")),
            "{report:?}"
        );
        assert_eq!((report.ok, report.failed), (0, 0));
    }

    /// A hook killed at its timeout still counts what it reported before
    /// (a fleet's adapter runs out of time part way), and says how many
    /// APs it left unreported.
    #[tokio::test]
    async fn a_hook_killed_at_its_timeout_keeps_what_it_reported() {
        let script = r#"cat > /dev/null; echo '{"address":"10.0.0.1","ok":true,"took_ms":1.0}'; echo '{"address":"10.0.0.2","ok":false,"took_ms":2.0,"error":"not up","result":"timed_out"}'; exec sleep 10"#;
        let argv = sh(script);
        let started = Instant::now();
        let report = run_hook(
            &argv,
            Duration::from_millis(500),
            &list(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
            std::future::pending(),
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(3), "{report:?}");
        assert_eq!(
            (report.ok, report.failed, report.timed_out),
            (1, 1, 1),
            "{report:?}"
        );
        assert!(
            report
                .error
                .as_deref()
                .is_some_and(|e| e.contains("killed") && e.contains("2 of 3 APs reported")),
            "{report:?}"
        );
    }

    #[tokio::test]
    async fn a_hook_is_killed_when_the_instance_leaves_master_and_keeps_what_it_reported() {
        let script = r#"cat > /dev/null; echo '{"address":"10.0.0.1","ok":true,"took_ms":1.0}'; exec sleep 10"#;
        let argv = sh(script);
        let (stop, watched) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = stop.send(true);
        });
        let started = Instant::now();
        let report = run_hook(
            &argv,
            Duration::from_secs(30),
            &list(&["10.0.0.1", "10.0.0.2"]),
            stopped(watched),
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(3), "{report:?}");
        assert_eq!((report.ok, report.failed), (1, 0), "{report:?}");
        assert!(
            report
                .error
                .as_deref()
                .is_some_and(|e| e.contains("left MASTER") && e.contains("1 of 2 APs reported")),
            "{report:?}"
        );
        // A sender gone without a word stops nothing: the hook runs out.
        let (gone, watched) = tokio::sync::watch::channel(false);
        drop(gone);
        let quick = sh(r#"cat > /dev/null; echo '{"address":"10.0.0.1","ok":true,"took_ms":1.0}'"#);
        let report = run_hook(
            &quick,
            Duration::from_secs(5),
            &list(&["10.0.0.1"]),
            stopped(watched),
        )
        .await;
        assert_eq!((report.ok, report.error), (1, None));
    }

    #[tokio::test]
    async fn a_hook_reports_per_ap_and_a_silent_failure_is_an_error() {
        let script = r#"cat > /dev/null; echo '{"address":"10.0.0.1","ok":true,"took_ms":1.0}'; echo '{"address":"10.0.0.2","ok":false,"took_ms":2.0,"error":"no"}'; echo 'noise'; exit 1"#;
        let argv = sh(script);
        let report = run_hook(
            &argv,
            Duration::from_secs(5),
            &list(&["10.0.0.1", "10.0.0.2"]),
            std::future::pending(),
        )
        .await;
        assert_eq!((report.ok, report.failed), (1, 1), "{report:?}");
        assert_eq!(report.failures, ["10.0.0.2: no"]);
        assert!(report.error.is_none(), "every AP reported: {report:?}");
        let silent = sh("echo broken >&2; exit 3");
        let report = run_hook(
            &silent,
            Duration::from_secs(5),
            &list(&["10.0.0.1"]),
            std::future::pending(),
        )
        .await;
        assert!(
            report
                .error
                .as_deref()
                .is_some_and(|e| e.contains("broken")),
            "{report:?}"
        );
        let missing = ["/nonexistent/hook".to_string()];
        let report = run_hook(
            &missing,
            Duration::from_secs(5),
            &list(&["10.0.0.1"]),
            std::future::pending(),
        )
        .await;
        assert!(
            report
                .error
                .as_deref()
                .is_some_and(|e| e.contains("/nonexistent/hook")),
            "{report:?}"
        );
    }
}
