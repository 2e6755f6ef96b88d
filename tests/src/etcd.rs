//! A real etcd (Debian's etcd-server, v3 API) for the witness labs: one
//! member in a namespace the test created, its data in a scratch
//! directory, killed and removed on drop.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::{daemon::wait_until, lab::in_netns, Scratch};

pub struct Etcd {
    child: Child,
    namespace: String,
    /// `http://address:2379`.
    pub endpoint: String,
    _data: Scratch,
}

/// Fails with what is missing when etcd is not installed.
pub fn require_etcd() {
    for (path, package) in [
        ("/usr/bin/etcd", "etcd-server"),
        ("/usr/bin/etcdctl", "etcd-client"),
    ] {
        assert!(
            std::path::Path::new(path).exists(),
            "{path} is missing: the witness labs need Debian's {package} (cargo xtask prereqs installs it)"
        );
    }
}

impl Etcd {
    /// One member named `name` listening on `address` in `namespace`.
    pub fn start(namespace: &str, name: &str, address: &str) -> Result<Self> {
        require_etcd();
        // Unique per lab: two tests of one binary run side by side.
        let data = Scratch::new(&format!("etcd-{namespace}-{name}"));
        let client = format!("http://{address}:2379");
        let peer = format!("http://{address}:2380");
        let args: Vec<String> = [
            "--name",
            name,
            "--data-dir",
            &data.0.join("data").display().to_string(),
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &format!("{name}={peer}"),
            "--initial-cluster-state",
            "new",
            "--log-level",
            "warn",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let log = std::fs::File::create(data.0.join("etcd.log")).context("etcd log")?;
        let child = in_netns(namespace, move || {
            Command::new("/usr/bin/etcd")
                .args(&args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
        })?
        .context("starting etcd")?;
        let etcd = Self {
            child,
            namespace: namespace.to_string(),
            endpoint: client,
            _data: data,
        };
        wait_until(Duration::from_secs(20), "etcd healthy", || {
            etcd.etcdctl(&["endpoint", "health"]).is_ok()
        })
        .map_err(|e| anyhow::anyhow!("{e}\n{}", etcd.log()))?;
        Ok(etcd)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._data.0.join("etcd.log")).unwrap_or_default()
    }

    /// `etcdctl` against this member, from its namespace; stdout.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String> {
        let mut argv = vec![
            "--endpoints".to_string(),
            self.endpoint.clone(),
            "--command-timeout".to_string(),
            "2s".to_string(),
        ];
        argv.extend(args.iter().map(|s| s.to_string()));
        let output = in_netns(&self.namespace, move || {
            Command::new("/usr/bin/etcdctl")
                .env("ETCDCTL_API", "3")
                .args(&argv)
                .output()
        })?
        .context("etcdctl")?;
        if !output.status.success() {
            bail!(
                "etcdctl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The value of `key` (empty when absent).
    pub fn get(&self, key: &str) -> Result<String> {
        let out = self.etcdctl(&["get", key, "--print-value-only"])?;
        Ok(out.trim().to_string())
    }

    /// Freezes the member (SIGSTOP): every request times out, as with a
    /// witness that is unreachable; `resume` thaws it.
    pub fn pause(&self) {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGSTOP) };
    }

    pub fn resume(&self) {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
