//! Running `wimark-ha run` inside a lab namespace, and asking it things.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use wimark_ha::{
    control::{self, Request},
    records::{DaemonStatus, InstanceStatus, State},
};

use crate::lab::in_netns;

/// A daemon process; killed (SIGKILL) on drop if still running.
pub struct Daemon {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub namespace: String,
    /// How it is launched: a wrapper command before the binary (e.g.
    /// `setpriv …`) and extra environment (e.g. `NOTIFY_SOCKET`).
    pub launch: Launch,
}

#[derive(Clone, Debug, Default)]
pub struct Launch {
    pub wrapper: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// The lab's usual VRRPv3 instance body: 10 ms adverts, VIP 10.77.0.100,
/// fast detection 1 ms x 10. x 3 is the benchmarks' figure for a quiet
/// link; beside other tests in one run it can flap (see docs/reliability.md,
/// Soak), and a test asserting exact histories must not depend on a quiet
/// machine. (x 10 flaps only under minutes of saturated cores, which no test
/// but the soak test causes; that one uses the packaged default, x 20.)
pub const FAST: &str = "version = 3\nadvert_interval = \"10ms\"\nvirtual_ips = [\"10.77.0.100/24\"]\nfast_detect = { interval = \"1ms\", multiplier = 10 }";

/// A v3 instance config for the lab (`eth1`, VRID 67).
pub fn config(socket: &std::path::Path, priority: u8, extra: &str) -> String {
    config_with_daemon(socket, priority, "", extra)
}

/// The same, with more `[daemon]` keys.
pub fn config_with_daemon(
    socket: &std::path::Path,
    priority: u8,
    daemon: &str,
    extra: &str,
) -> String {
    format!(
        "[daemon]\ncontrol_socket = \"{}\"\n{daemon}\n\n[[instance]]\nname = \"WIM1\"\ninterface = \"eth1\"\nvrid = 67\npriority = {priority}\n{extra}\n",
        socket.display()
    )
}

impl Daemon {
    /// Writes `config` to a temporary file and starts the daemon in `namespace`.
    pub fn start(
        namespace: &str,
        name: &str,
        config: impl Fn(&std::path::Path) -> String,
    ) -> Result<Self> {
        Self::start_with(namespace, name, config, Launch::default())
    }

    /// The same, launched as `launch` says.
    pub fn start_with(
        namespace: &str,
        name: &str,
        config: impl Fn(&std::path::Path) -> String,
        launch: Launch,
    ) -> Result<Self> {
        // Unique per run, as `Scratch` is, and fresh: a journal left by a
        // crashed earlier run must not become this daemon's history.
        let dir = std::env::temp_dir().join(format!(
            "wimark-ha-{namespace}-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("control.sock");
        let path = dir.join("wimark-ha.toml");
        std::fs::write(&path, config(&socket))?;
        let mut daemon = Self {
            child: None,
            socket,
            config: path,
            namespace: namespace.to_string(),
            launch,
        };
        daemon.restart()?;
        Ok(daemon)
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The daemon's failover journal directory (kept across restarts).
    pub fn state_dir(&self) -> PathBuf {
        self.config.with_file_name("state")
    }

    /// The instance's latest transition, as `status` reports it.
    pub fn last_transition(&self) -> wimark_ha::records::TransitionRecord {
        self.instance()
            .ok()
            .and_then(|i| i.history.last().cloned())
            .unwrap_or_else(|| {
                panic!(
                    "no transition in {}'s status:\n{}",
                    self.namespace,
                    self.log()
                )
            })
    }

    /// Every transition in the failover journal as "FROM->TO", oldest
    /// first: complete across restarts, readable after the daemon exited.
    pub fn moves(&self) -> Vec<String> {
        wimark_ha::history::read(&self.state_dir())
            .map(|read| {
                read.entries
                    .into_iter()
                    .filter_map(|entry| match entry {
                        wimark_ha::history::Entry::Transition { record, .. } => {
                            Some(format!("{}->{}", record.from, record.to))
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits (the journal is written off the fast path) until the journal
    /// holds exactly `expected`; panics with what it holds instead.
    pub fn expect_moves(&self, expected: &[&str]) {
        let matches = || self.moves() == expected;
        if wait_until(Duration::from_secs(3), "the journal", matches).is_err() {
            panic!(
                "transitions lost or extra in {}'s journal:\n  expected {expected:?}\n  found    {:?}",
                self.namespace,
                self.moves()
            );
        }
    }

    pub fn restart(&mut self) -> Result<()> {
        let binary = crate::wimark_ha_bin();
        let config = self.config.clone();
        let log = self.config.with_extension("log");
        let state_dir = self.state_dir();
        let launch = self.launch.clone();
        let child = in_netns(&self.namespace, move || -> Result<Child> {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)?;
            let mut command = match launch.wrapper.split_first() {
                Some((program, args)) => {
                    let mut command = Command::new(program);
                    command.args(args).arg(binary);
                    command
                }
                None => Command::new(binary),
            };
            command.envs(launch.env.iter().map(|(k, v)| (k, v)));
            Ok(command
                .args(["run", "--config"])
                .arg(&config)
                .arg("--state-dir")
                .arg(&state_dir)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?)
        })??;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.status().is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "wimark-ha run exited at start ({status}); log:\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "wimark-ha run did not open its control socket in 10 s; log:\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config.with_extension("log")).unwrap_or_default()
    }

    /// Its warning and error lines (at most 8), prefixed with `name`: what
    /// a failure on CI has to go on (a stalled sender, a lease run out).
    pub fn warnings(&self, name: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .take(8)
            .map(|l| format!("{name}: {l}"))
            .collect()
    }

    /// `wimark-ha doctor --json` with this daemon's config, from its
    /// namespace: every finding.
    pub fn doctor_json(&self) -> Vec<serde_json::Value> {
        let output = std::process::Command::new("ip")
            .args(["netns", "exec", &self.namespace])
            .arg(crate::wimark_ha_bin())
            .args(["doctor", "--json", "--config"])
            .arg(&self.config)
            .output()
            .expect("ip netns exec wimark-ha doctor");
        let findings: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("doctor --json: {e}\n{output:?}"));
        findings.as_array().cloned().expect("doctor --json prints an array")
    }

    pub fn status(&self) -> Result<DaemonStatus> {
        let response = control::request(&self.socket, &Request::Status)?;
        response.status.context("no status in the answer")
    }

    /// The first instance's state, `None` while the daemon does not answer.
    pub fn state(&self) -> Option<State> {
        self.instance().ok().map(|i| i.state)
    }

    /// Waits until this backup's fast rule is armed: the master's stream
    /// has run its warm-up (and, with `multiplier = "auto"`, the gaps are
    /// learned). Until then only the RFC timer judges a failure.
    pub fn wait_fast_rule_armed(&self) -> Result<()> {
        wait_until(Duration::from_secs(15), "the backup's fast rule to arm", || {
            self.instance()
                .ok()
                .and_then(|i| i.detection)
                .is_some_and(|d| d.armed)
        })
    }

    /// As [`wait_fast_rule_armed`](Self::wait_fast_rule_armed), but a
    /// backup whose learned window reached its ceiling — which auto does
    /// not arm: the RFC timer judges such a stream — is settled too, and
    /// says so on stderr. For labs that measure what the daemon does, not
    /// that it arms.
    pub fn wait_fast_rule_settled(&self) -> Result<()> {
        use wimark_ha::vrrp::WindowBasis;
        let mut at_ceiling = false;
        wait_until(Duration::from_secs(15), "the backup's fast rule to arm (or reach its ceiling)", || {
            let detection = self.instance().ok().and_then(|i| i.detection);
            at_ceiling = detection.as_ref().is_some_and(|d| !d.armed && d.basis == Some(WindowBasis::Ceiling));
            detection.is_some_and(|d| d.armed) || at_ceiling
        })?;
        if at_ceiling {
            eprintln!("lab: the backup's auto window is at its ceiling, so its fast rule is not armed: the RFC timer judges this stream");
        }
        Ok(())
    }

    pub fn instance(&self) -> Result<InstanceStatus> {
        self.status()?
            .instances
            .into_iter()
            .next()
            .context("no instance")
    }

    pub fn signal(&mut self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: plain kill(2) on our child.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    /// Waits for the process to exit; its exit code.
    pub fn wait(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.config.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Daemon {
    /// The daemon's `status.roles`, typed (empty while it cannot be asked
    /// or has no `[roles]`).
    pub fn roles(&self) -> wimark_ha::records::RolesStatus {
        self.status().ok().and_then(|s| s.roles).unwrap_or_default()
    }
}

/// The daemon's `status.roles` as JSON (null when it cannot be asked), for
/// assertions and failure messages.
pub fn roles_json(daemon: &Daemon) -> serde_json::Value {
    daemon
        .status()
        .ok()
        .and_then(|s| serde_json::to_value(s.roles).ok())
        .unwrap_or_default()
}

/// Polls `check` every 5 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !check() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Whether `address` is on `interface` in `namespace`.
pub fn has_address(namespace: &str, interface: &str, address: &str) -> bool {
    let output = Command::new("ip")
        .args(["-n", namespace, "-br", "addr", "show", "dev", interface])
        .output();
    output
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .any(|w| w.split('/').next() == Some(address))
        })
        .unwrap_or(false)
}

/// `GET /metrics` from inside `namespace` (the endpoint binds its
/// loopback at `listen`), the whole response.
pub fn scrape_metrics(namespace: &str, listen: &'static str) -> std::io::Result<String> {
    use std::io::{Read as _, Write as _};
    in_netns(namespace, move || -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect(listen)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    })
    .map_err(std::io::Error::other)?
}

/// `wimark-ha status` (text) of the daemon at `socket`, run in `namespace`.
pub fn status_text(namespace: &str, socket: &std::path::Path) -> String {
    let output = Command::new("ip")
        .args(["netns", "exec", namespace])
        .arg(crate::wimark_ha_bin())
        .args(["status", "--socket"])
        .arg(socket)
        .output()
        .expect("wimark-ha status");
    String::from_utf8_lossy(&output.stdout).to_string()
}
