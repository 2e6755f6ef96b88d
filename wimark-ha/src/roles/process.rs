//! The role-bound programs (`[[roles.master_process]]`): started with the
//! master stack, restarted when they die while they should run, stopped
//! (SIGTERM, then SIGKILL after the grace) on demotion.
//!
//! Owns: their supervision tasks and their lines in `RolesStatus`. Must
//! not: call Docker or decide when a role changes.

use super::*;

/// One role-bound program under supervision.
pub(super) struct Supervised {
    pub(super) stop: tokio::sync::watch::Sender<bool>,
    pub(super) task: tokio::task::JoinHandle<()>,
}

/// How long a role-bound program gets to exit on SIGTERM before SIGKILL.
pub const PROCESS_STOP_GRACE: Duration = Duration::from_secs(5);

fn update_process(
    status: &Arc<Mutex<RolesStatus>>,
    argv: &str,
    f: impl FnOnce(&mut ProcessStatus),
) {
    if let Ok(mut status) = status.lock() {
        let index = match status.processes.iter().position(|p| p.argv == argv) {
            Some(index) => index,
            None => {
                status.processes.push(ProcessStatus {
                    argv: argv.to_string(),
                    ..Default::default()
                });
                status.processes.len() - 1
            }
        };
        f(&mut status.processes[index]);
    }
}

/// Runs `argv` until told to stop, starting it again (with backoff) if it
/// dies meanwhile; on stop, SIGTERM, then SIGKILL after the grace time.
pub(super) async fn supervise(
    argv: Vec<String>,
    status: Arc<Mutex<RolesStatus>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let name = argv.join(" ");
    let mut backoff = Duration::from_millis(500);
    loop {
        let mut command = tokio::process::Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .kill_on_drop(true)
            // Its own process group, so that stopping it also stops what it
            // started (lsyncd's rsync children).
            .process_group(0)
            .stdin(std::process::Stdio::null());
        // If the daemon itself dies (even by SIGKILL), the kernel stops the
        // program too: a master-only mirror must never outlive mastership.
        // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        match command.spawn() {
            Err(e) => {
                tracing::error!(process = %name, "cannot start: {e}");
                update_process(&status, &name, |p| {
                    p.last_exit = Some(format!("cannot start: {e}"))
                });
            }
            Ok(mut child) => {
                let pid = child.id();
                tracing::info!(process = %name, ?pid, "role-bound process started");
                update_process(&status, &name, |p| {
                    p.running = true;
                    p.pid = pid;
                });
                tokio::select! {
                    exit = child.wait() => {
                        let how = match exit {
                            Ok(s) => s.to_string(),
                            Err(e) => e.to_string(),
                        };
                        if let Some(pid) = pid {
                            // Its leftover children go with it.
                            let _ = nix::sys::signal::killpg(
                                nix::unistd::Pid::from_raw(pid as i32),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                        tracing::warn!(process = %name, "role-bound process died ({how}); starting it again in {backoff:?}");
                        update_process(&status, &name, |p| {
                            p.running = false;
                            p.pid = None;
                            p.restarts += 1;
                            p.last_exit = Some(how);
                        });
                    }
                    _ = stop.changed() => {
                        // The process group we created for it.
                        let group = pid.map(|pid| nix::unistd::Pid::from_raw(pid as i32));
                        if let Some(group) = group {
                            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
                        }
                        if tokio::time::timeout(PROCESS_STOP_GRACE, child.wait()).await.is_err() {
                            let _ = child.kill().await;
                        }
                        if let Some(group) = group {
                            // Nothing of it may outlive mastership.
                            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                        }
                        update_process(&status, &name, |p| {
                            p.running = false;
                            p.pid = None;
                            p.last_exit = Some("stopped (no longer MASTER)".to_string());
                        });
                        tracing::info!(process = %name, "role-bound process stopped");
                        return;
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}
