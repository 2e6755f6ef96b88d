//! One strongSwan charon per AP and per server, in its namespaces, with
//! its configs (responder, initiator) and a check that a tunnel works.

use super::*;

/// One charon daemon in a lab namespace.
pub struct Charon {
    child: Option<Child>,
    pub namespace: String,
    pub dir: PathBuf,
}

impl Charon {
    /// Starts charon in `namespace` with its files under `dir` (created);
    /// returns once its vici socket answers.
    pub fn start(namespace: &str, dir: &Path) -> Result<Self> {
        for binary in ["/usr/lib/ipsec/charon", "/usr/sbin/swanctl"] {
            if !Path::new(binary).exists() {
                bail!("{binary} is missing: the AP lab needs strongswan-charon, strongswan-swanctl, libcharon-extra-plugins and libstrongswan-standard-plugins (cargo xtask prereqs)");
            }
        }
        std::fs::create_dir_all(dir)?;
        let vici = dir.join("charon.vici");
        let _ = std::fs::remove_file(&vici);
        let conf = dir.join("strongswan.conf");
        std::fs::write(
            &conf,
            format!(
                "charon {{\n  load = {PLUGINS}\n  filelog {{\n    log {{\n      path = {log}\n      flush_line = yes\n      default = 1\n      ike = 2\n      time_format = %T\n    }}\n  }}\n  plugins {{\n    vici {{\n      socket = unix://{vici}\n    }}\n    kernel-libipsec {{\n      allow_peer_ts = yes\n    }}\n  }}\n}}\n",
                log = dir.join("charon.log").display(),
                vici = vici.display(),
            ),
        )?;
        let child = Command::new("ip")
            .args(["netns", "exec", namespace, "unshare", "--mount", "sh", "-c"])
            .arg("mount -t tmpfs tmpfs /run && exec /usr/lib/ipsec/charon")
            .env("STRONGSWAN_CONF", &conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("charon.stderr"))?)
            .spawn()
            .context("starting charon")?;
        let mut charon = Self {
            child: Some(child),
            namespace: namespace.to_string(),
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while charon.swanctl(&["--stats"]).is_err() {
            if let Some(status) = charon
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "charon in {namespace} exited at start ({status}):\n{}",
                    charon.log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "charon in {namespace}: no vici socket in 10 s:\n{}",
                    charon.log()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(charon)
    }

    /// The vici socket, as a URI for swanctl and the adapter.
    pub fn vici_uri(&self) -> String {
        format!("unix://{}", self.dir.join("charon.vici").display())
    }

    /// Runs swanctl against this charon; its stdout, or why it failed.
    pub fn swanctl(&self, args: &[&str]) -> Result<String> {
        let output = Command::new("swanctl")
            .args(args)
            .args(["--uri", &self.vici_uri()])
            .output()
            .context("running swanctl")?;
        if !output.status.success() {
            bail!(
                "swanctl {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).to_string())
    }

    /// Loads a swanctl.conf (connections and secrets).
    /// The swanctl.conf [`Charon::load`] last wrote and loaded.
    pub fn swanctl_conf(&self) -> PathBuf {
        self.dir.join("swanctl.conf")
    }

    pub fn load(&self, swanctl_conf: &str) -> Result<()> {
        let path = self.swanctl_conf();
        std::fs::write(&path, swanctl_conf)?;
        self.swanctl(&[
            "--load-all",
            "--noprompt",
            "--file",
            &path.display().to_string(),
        ])
        .map(|_| ())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("charon.log")).unwrap_or_default()
            + &std::fs::read_to_string(self.dir.join("charon.stderr")).unwrap_or_default()
    }

    /// Kills charon at once (SIGKILL): the node loss of a server.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A server's responder config: any AP with the lab's PSK, on `vip`.
pub fn responder_conf(vip: &str) -> String {
    // mobike = no: with MOBIKE a planned switchover moves the AP's SA to
    // the old master's own address, off the VIP.
    format!(
        "connections {{\n  aps {{\n    local_addrs = {vip}\n    encap = yes\n    mobike = no\n    version = 2\n    proposals = {IKE_PROPOSAL}\n    local {{\n      auth = psk\n      id = {SERVER_ID}\n    }}\n    remote {{\n      auth = psk\n    }}\n    children {{\n      tunnel {{\n        local_ts = {SERVER_INNER}/32\n        remote_ts = 10.99.1.0/24\n        esp_proposals = {ESP_PROPOSAL}\n      }}\n    }}\n  }}\n}}\nsecrets {{\n  ike-lab {{\n    secret = \"{PSK}\"\n  }}\n}}\n"
    )
}

/// How an AP's charon treats a silent controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApIke {
    /// strongSwan's defaults: no DPD, the SA stays until rekey.
    Defaults,
    /// DPD every second, restart on DPD, close or start failure.
    Dpd1s,
}

/// AP `n`'s initiator config: from `address` to `vip`, inner 10.99.1.n;
/// its IKE identity is its address (strongSwan's default).
pub fn initiator_conf(n: u8, address: &str, vip: &str, ike: ApIke) -> String {
    let dpd = match ike {
        ApIke::Defaults => String::new(),
        ApIke::Dpd1s => "    dpd_delay = 1s\n".to_string(),
    };
    let actions = match ike {
        ApIke::Defaults => String::new(),
        ApIke::Dpd1s => "        dpd_action = restart\n        close_action = start\n".to_string(),
    };
    format!(
        "connections {{\n  controller {{\n    local_addrs = {address}\n    remote_addrs = {vip}\n    encap = yes\n    version = 2\n    proposals = {IKE_PROPOSAL}\n{dpd}    local {{\n      auth = psk\n    }}\n    remote {{\n      auth = psk\n      id = {SERVER_ID}\n    }}\n    children {{\n      tunnel {{\n        local_ts = {inner}/32\n        remote_ts = {SERVER_INNER}/32\n        esp_proposals = {ESP_PROPOSAL}\n        start_action = start\n{actions}      }}\n    }}\n  }}\n}}\nsecrets {{\n  ike-lab {{\n    secret = \"{PSK}\"\n  }}\n}}\n",
        inner = ap_inner(n),
    )
}

/// Whether AP `n` (in `namespace`) reaches the servers through its tunnel
/// now: one ICMP echo from its inner address, answered within `wait`.
pub fn tunnel_works(namespace: &str, n: u8, wait: Duration) -> bool {
    let seconds = wait.as_secs().max(1).to_string();
    Command::new("ip")
        .args([
            "netns", "exec", namespace, "busybox", "ping", "-c", "1", "-W",
        ])
        .arg(seconds)
        .args(["-I", &ap_inner(n), SERVER_INNER])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
