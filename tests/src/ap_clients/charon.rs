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
    /// returns once its vici socket answers. One lab charon may stand for
    /// hundreds of APs, each of which would see one half-open IKE_SA from
    /// the controller: charon's limits per peer address (`block_threshold`
    /// 5, `cookie_threshold_ip` 3) and overall (`cookie_threshold`), made
    /// for one device, are lifted. Left on, the AP charon answered the new
    /// master's initiations beyond the third from the VIP with a COOKIE
    /// and some waited for a retransmit (4 s). And the IKE_SA table is given
    /// buckets (`ikesa_table_size`; strongSwan's default is one bucket, a
    /// list walked at every lookup): the servers' charon holds an IKE_SA
    /// per AP, and with one bucket B set up 5 000 APs at 15-19 a second
    /// against ~100 at 1 000 — what the guide tells operators to set.
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
                "charon {{\n  load = {PLUGINS}\n  block_threshold = 100000\n  cookie_threshold = 100000\n  cookie_threshold_ip = 100000\n  ikesa_table_size = 4096\n  ikesa_table_segments = 16\n  filelog {{\n    log {{\n      path = {log}\n      flush_line = yes\n      default = 1\n      ike = 2\n      time_format = %T\n    }}\n  }}\n  plugins {{\n    vici {{\n      socket = unix://{vici}\n    }}\n    kernel-libipsec {{\n      allow_peer_ts = yes\n    }}\n  }}\n}}\n",
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

    /// IKE_SAs established (total less half-open), from `swanctl --stats`
    /// ("IKE_SAs: N total, M half-open": cheap, where `--list-sas` at
    /// thousands is not); None when charon does not answer.
    pub fn established(&self) -> Option<usize> {
        let stats = self.swanctl(&["--stats"]).ok()?;
        // "IKE_SAs: 250 total, 0 half-open"
        let line = stats.lines().find(|l| l.trim_start().starts_with("IKE_SAs:"))?;
        let mut words = line.split_whitespace();
        let total: usize = words.nth(1)?.parse().ok()?;
        let half_open: usize = words.nth(1)?.parse().ok()?;
        Some(total - half_open.min(total))
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
        "connections {{\n  aps {{\n    local_addrs = {vip}\n    encap = yes\n    mobike = no\n    version = 2\n    proposals = {proposal}\n    local {{\n      auth = psk\n      id = {SERVER_ID}\n    }}\n    remote {{\n      auth = psk\n    }}\n    children {{\n      tunnel {{\n        local_ts = {SERVER_INNER}/32\n        remote_ts = {INNER_PREFIX}\n        esp_proposals = {ESP_PROPOSAL}\n      }}\n    }}\n  }}\n}}\nsecrets {{\n  ike-lab {{\n    secret = \"{PSK}\"\n  }}\n}}\n",
        proposal = ike_proposal()
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

/// The initiator config of the APs `(n, address)` that share one charon
/// (one namespace): one connection each, from its address to `vip`, inner
/// 10.99.x.y; each AP's IKE identity is its address (strongSwan's
/// default), so the servers' INITIAL_CONTACT to one AP drops exactly that
/// AP's stale IKE_SA.
pub fn initiator_conf(aps: &[(usize, &str)], vip: &str, ike: ApIke) -> String {
    let dpd = match ike {
        ApIke::Defaults => String::new(),
        ApIke::Dpd1s => "    dpd_delay = 1s\n".to_string(),
    };
    let actions = match ike {
        ApIke::Defaults => String::new(),
        ApIke::Dpd1s => "        dpd_action = restart\n        close_action = start\n".to_string(),
    };
    let mut conf = String::from("connections {\n");
    for (n, address) in aps {
        conf += &format!(
            "  ap{n} {{\n    local_addrs = {address}\n    remote_addrs = {vip}\n    encap = yes\n    version = 2\n    proposals = {proposal}\n{dpd}    local {{\n      auth = psk\n      id = {address}\n    }}\n    remote {{\n      auth = psk\n      id = {SERVER_ID}\n    }}\n    children {{\n      tunnel {{\n        local_ts = {inner}/32\n        remote_ts = {SERVER_INNER}/32\n        esp_proposals = {ESP_PROPOSAL}\n        start_action = start\n{actions}      }}\n    }}\n  }}\n",
            inner = ap_inner(*n),
            proposal = ike_proposal(),
        );
    }
    conf + &format!("}}\nsecrets {{\n  ike-lab {{\n    secret = \"{PSK}\"\n  }}\n}}\n")
}

/// Whether AP `n` (in `namespace`) reaches the servers through its tunnel
/// now: one ICMP echo from its inner address, answered within `wait`.
pub fn tunnel_works(namespace: &str, n: usize, wait: Duration) -> bool {
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
