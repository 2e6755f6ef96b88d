//! Real AP clients for the lab: strongSwan's charon as each AP's IKEv2
//! initiator (PSK, UDP-encapsulated ESP) to the VIP, and charon responders
//! on the servers, as the vendor's IKE containers are.
//!
//! This kernel has no XFRM ESP, so every charon does ESP in userspace
//! (kernel-libipsec, a TUN device `ipsec0` in its namespace). Each charon
//! runs in a network namespace of the lab and in a mount namespace of its
//! own with a private `/run` (its pid file is fixed at /run/charon.pid),
//! with its own `STRONGSWAN_CONF` and vici socket. Drop kills it.
//!
//! Addresses: inside the tunnels the servers are 10.99.0.1 (on `lo` of
//! both), AP `n` is 10.99.1.n.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};
use wimark_ha::records::State;

use anyhow::{bail, Context as _, Result};

/// The pre-shared key of the lab's IKE SAs.
pub const PSK: &str = "wimark-lab-psk";
/// The servers' address inside the tunnels.
pub const SERVER_INNER: &str = "10.99.0.1";
/// The IKE identity the servers use (both, as one controller).
pub const SERVER_ID: &str = "controller";
/// The proposals every lab charon offers and accepts (no curve25519 in
/// Debian's plugin set; the openssl plugin has modp2048).
const IKE_PROPOSAL: &str = "aes128-sha256-modp2048";
const ESP_PROPOSAL: &str = "aes128-sha256";
/// The plugins a lab charon loads: crypto from openssl, ESP in userspace,
/// addresses and routes from netlink, control over vici.
const PLUGINS: &str =
    "random nonce openssl pem pkcs1 x509 pubkey kdf kernel-libipsec kernel-netlink socket-default vici";

/// AP `n`'s address inside its tunnel.
pub fn ap_inner(n: u8) -> String {
    format!("10.99.1.{n}")
}

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

/// Servers A and B (`eth1`, 10.77.0.1 and .2) and `count` APs (`eth0`,
/// 10.77.0.(50 + n)) on one switch, each AP in a namespace of its own;
/// the tunnels' inner addresses on `lo` (10.99.0.1 on both servers,
/// 10.99.1.n on AP n).
pub struct ApLab {
    pub lab: crate::lab::Lab,
    pub a: String,
    pub b: String,
    pub switch: String,
    /// AP n (1-based) is `aps[n - 1]`.
    pub aps: Vec<String>,
}

impl ApLab {
    pub fn new(count: u8) -> Result<Self> {
        let (mut lab, a, b, switch) = crate::lab::two_servers_on_a_switch("eth1")?;
        lab.address(&a, "eth1", "10.77.0.1/24")?;
        lab.address(&b, "eth1", "10.77.0.2/24")?;
        for server in [&a, &b] {
            lab.address(server, "lo", &format!("{SERVER_INNER}/32"))?;
        }
        let mut aps = Vec::new();
        for n in 1..=count {
            let ap = lab.namespace(&format!("ap{n}"), false)?;
            let port = format!("ap{n}-port");
            lab.veth((&ap, "eth0"), (&switch, &port))?;
            crate::lab::ip(&["-n", &switch, "link", "set", &port, "master", "br0"])?;
            lab.address(&ap, "eth0", &format!("{}/24", ap_address(n)))?;
            lab.address(&ap, "lo", &format!("{}/32", ap_inner(n)))?;
            aps.push(ap);
        }
        Ok(Self {
            lab,
            a,
            b,
            switch,
            aps,
        })
    }
}

impl ApLab {
    /// charon responders on both servers (files under `dir`), for `vip`.
    pub fn responders(&self, dir: &Path) -> Result<(Charon, Charon)> {
        let a = Charon::start(&self.a, &dir.join("charon-a"))?;
        let b = Charon::start(&self.b, &dir.join("charon-b"))?;
        for charon in [&a, &b] {
            charon.load(&responder_conf(VIP))?;
        }
        Ok((a, b))
    }

    /// Every AP's initiator (`ike` settings) to the VIP; returns once every
    /// AP's tunnel works (or says which did not, with its charon's log).
    pub fn start_aps(&self, dir: &Path, ike: ApIke) -> Result<Vec<Charon>> {
        let mut charons = Vec::new();
        for (i, namespace) in self.aps.iter().enumerate() {
            let n = i as u8 + 1;
            let charon = Charon::start(namespace, &dir.join(format!("ap{n}")))?;
            charon.load(&initiator_conf(n, &ap_address(n), VIP, ike))?;
            charons.push(charon);
        }
        for (i, namespace) in self.aps.iter().enumerate() {
            let n = i as u8 + 1;
            crate::daemon::wait_until(Duration::from_secs(20), "an AP's tunnel to the VIP", || {
                tunnel_works(namespace, n, Duration::from_secs(1))
            })
            .with_context(|| format!("AP {n}:\n{}", charons[i].log()))?;
        }
        Ok(charons)
    }
}

/// AP `n`'s address on the controller's segment.
pub fn ap_address(n: u8) -> String {
    format!("10.77.0.{}", 50 + u16::from(n))
}

/// The lab's VIP in the AP scenarios.
pub const VIP: &str = "10.77.0.100";

/// `wimark-ha ike-initiate`'s config for the lab's responders (the same
/// connection as [`responder_conf`], in the adapter's TOML).
pub fn adapter_toml(vici: &str) -> String {
    format!(
        "vici = \"{vici}\"\nchild = \"tunnel\"\ntimeout = \"3s\"\n\n[connection]\nlocal_addrs = [\"{VIP}\"]\nversion = 2\nencap = true\nmobike = false\nproposals = [\"{IKE_PROPOSAL}\"]\n[connection.local]\nauth = \"psk\"\nid = \"{SERVER_ID}\"\n[connection.remote]\nauth = \"psk\"\n[connection.children.tunnel]\nlocal_ts = [\"{SERVER_INNER}/32\"]\nremote_ts = [\"10.99.1.0/24\"]\nesp_proposals = [\"{ESP_PROPOSAL}\"]\n"
    )
}

/// A thread in a namespace until the flag is set.
fn spawn_in_netns(
    namespace: &str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    body: impl FnOnce(std::sync::Arc<std::sync::atomic::AtomicBool>) + Send + 'static,
) -> Result<thread::JoinHandle<()>> {
    let path = crate::lab::netns_path(namespace);
    Ok(thread::Builder::new()
        .name(format!("netns {namespace}"))
        .spawn(move || {
            if crate::lab::enter_netns(&path).is_ok() {
                body(stop);
            }
        })?)
}

/// UDP probes through the tunnels: each AP sends to the servers' inner
/// address every 10 ms and records when answers arrive; both servers echo.
pub struct TunnelProbes {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    /// Per AP, the arrival times of answers.
    answers: Arrivals,
}

const PROBE_PORT: u16 = 7;
const PROBE_EVERY: Duration = Duration::from_millis(10);

impl TunnelProbes {
    pub fn start(lab: &ApLab) -> Result<Self> {
        use std::sync::{atomic::Ordering, Arc, Mutex};
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut threads = Vec::new();
        for server in [&lab.a, &lab.b] {
            threads.push(spawn_in_netns(server, stop.clone(), |stop| {
                let Ok(socket) = std::net::UdpSocket::bind((SERVER_INNER, PROBE_PORT)) else {
                    return;
                };
                let _ = socket.set_read_timeout(Some(Duration::from_millis(50)));
                let mut buffer = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = socket.recv_from(&mut buffer) {
                        let _ = socket.send_to(&buffer[..n], from);
                    }
                }
            })?);
        }
        let mut answers = Vec::new();
        for (i, ap) in lab.aps.iter().enumerate() {
            let n = i as u8 + 1;
            let seen = Arc::new(Mutex::new(Vec::new()));
            answers.push(seen.clone());
            threads.push(spawn_in_netns(ap, stop.clone(), move |stop| {
                let Ok(socket) = std::net::UdpSocket::bind((ap_inner(n).as_str(), 0)) else {
                    return;
                };
                let _ = socket.connect((SERVER_INNER, PROBE_PORT));
                let _ = socket.set_read_timeout(Some(Duration::from_millis(1)));
                let mut next = Instant::now();
                let mut buffer = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if Instant::now() >= next {
                        let _ = socket.send(b"probe");
                        next += PROBE_EVERY;
                    }
                    if socket.recv(&mut buffer).is_ok() {
                        if let Ok(mut seen) = seen.lock() {
                            seen.push(Instant::now());
                        }
                    }
                }
            })?);
        }
        Ok(Self {
            stop,
            threads,
            answers,
        })
    }

    /// Per AP, the first answer that cannot have come through the lost
    /// server, timed from the loss (None: none yet).
    pub fn back_after(&self, loss: Loss) -> Vec<Option<Duration>> {
        back_after(&self.answers, loss)
    }

    /// Waits until every AP is back, or `limit` after the loss.
    pub fn wait_all_back(&self, loss: Loss, limit: Duration) -> Vec<Option<Duration>> {
        wait_all_back(&self.answers, loss, limit)
    }

    /// Per AP, the longest silence in the answers from `from` to `until`.
    pub fn longest_gap(&self, from: Instant, until: Instant) -> Vec<Duration> {
        longest_gap(&self.answers, from, until)
    }
}

/// When something arrived at each AP (a probe's answer, an MQTT message).
type Arrivals = Vec<std::sync::Arc<std::sync::Mutex<Vec<Instant>>>>;

/// Per AP, the longest silence between arrivals from `from` to `until`
/// (a silence still running at `until` counts up to it): the outage a
/// planned switchover caused, where nothing is lost outright.
fn longest_gap(arrivals: &Arrivals, from: Instant, until: Instant) -> Vec<Duration> {
    arrivals
        .iter()
        .map(|seen| {
            let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
            let mut last = from;
            let mut longest = Duration::ZERO;
            for t in seen.into_iter().filter(|t| *t > from && *t <= until) {
                longest = longest.max(t - last);
                last = t;
            }
            longest.max(until.saturating_duration_since(last))
        })
        .collect()
}

/// Per AP, the first arrival that cannot have come through the lost server
/// (after its cut was complete), timed from the loss's start.
fn back_after(arrivals: &Arrivals, loss: Loss) -> Vec<Option<Duration>> {
    arrivals
        .iter()
        .map(|seen| {
            seen.lock()
                .ok()
                .and_then(|s| s.iter().find(|t| **t > loss.cut).map(|t| *t - loss.started))
        })
        .collect()
}

/// Waits until every AP has such an arrival, or `limit` after the loss.
fn wait_all_back(arrivals: &Arrivals, loss: Loss, limit: Duration) -> Vec<Option<Duration>> {
    while loss.started.elapsed() < limit {
        let back = back_after(arrivals, loss);
        if back.iter().all(Option::is_some) {
            return back;
        }
        thread::sleep(Duration::from_millis(20));
    }
    back_after(arrivals, loss)
}

impl Drop for TunnelProbes {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Two daemons (A 200, B 100, 1 ms fast detection) in front of real AP
/// clients, the IKE responders on both servers; with `recovery`, both have
/// `[ap_recovery]` (the synced AP table and `wimark-ha ike-initiate` as
/// the IKE hook). Ready when every AP's tunnel works through A and, with
/// recovery, B knows every AP.
pub struct ApFailover {
    /// With `mqtt_keepalive`: brokers on both servers, a subscriber per AP.
    pub mqtt: Option<Mqtt>,
    pub daemon_a: crate::daemon::Daemon,
    pub daemon_b: crate::daemon::Daemon,
    pub aps: Vec<Charon>,
    pub charon_a: Charon,
    pub charon_b: Charon,
    pub lab: ApLab,
    _scratch: crate::Scratch,
}

impl ApFailover {
    pub fn new(
        count: u8,
        ike: ApIke,
        recovery: bool,
        mqtt_keepalive: Option<u16>,
        tag: &str,
    ) -> Result<Self> {
        use crate::daemon::{config, wait_until, Daemon, FAST};
        let lab = ApLab::new(count)?;
        let scratch = crate::Scratch::new(tag);
        let (charon_a, charon_b) = lab.responders(&scratch.0)?;
        let key = scratch.0.join("ap-sync.key");
        std::fs::write(&key, "lab-key-0123456789abcdef\n")?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
        let body = |peer: &str, charon: &Charon, name: &str| -> Result<String> {
            if !recovery {
                return Ok(FAST.to_string());
            }
            let adapter = scratch.0.join(format!("ike-initiate-{name}.toml"));
            std::fs::write(&adapter, adapter_toml(&charon.vici_uri()))?;
            Ok(format!(
                "{FAST}\n\n[ap_recovery]\nsync_key_file = \"{}\"\nsync_peer = \"{peer}\"\nike_hook = [\"{}\", \"ike-initiate\", \"--config\", \"{}\"]\nike_hook_timeout = \"10s\"\nike_daemon_config = [\"{}\"]\n",
                key.display(),
                crate::wimark_ha_bin().display(),
                adapter.display(),
                charon.swanctl_conf().display()
            ))
        };
        let body_a = body("10.77.0.2", &charon_a, "a")?;
        let body_b = body("10.77.0.1", &charon_b, "b")?;
        let daemon_a = Daemon::start(&lab.a, &format!("{tag}-a"), |s| config(s, 200, &body_a))?;
        wait_until(Duration::from_secs(5), "A MASTER", || {
            daemon_a.state() == Some(State::Master)
        })
        .with_context(|| daemon_a.log())?;
        let daemon_b = Daemon::start(&lab.b, &format!("{tag}-b"), |s| config(s, 100, &body_b))?;
        wait_until(Duration::from_secs(5), "B BACKUP", || {
            daemon_b.state() == Some(State::Backup)
        })
        .with_context(|| daemon_b.log())?;
        let aps = lab.start_aps(&scratch.0, ike)?;
        let mqtt = match mqtt_keepalive {
            Some(keepalive) => Some(Mqtt::start(&lab, &scratch.0.join("mqtt"), keepalive)?),
            None => None,
        };
        if recovery {
            wait_until(Duration::from_secs(15), "B knows every AP", || {
                daemon_b
                    .status()
                    .ok()
                    .and_then(|s| s.ap_sync)
                    .is_some_and(|sync| sync.synced_aps == usize::from(count))
            })
            .with_context(|| format!("{:?}", daemon_b.status().map(|s| s.ap_sync)))?;
        }
        if mqtt.is_some() && recovery {
            // The MQTT ports reach B with the next change or refresh.
            wait_until(
                Duration::from_secs(15),
                "B knows every AP's MQTT port",
                || {
                    daemon_b
                        .status()
                        .ok()
                        .and_then(|s| s.ap_sync)
                        .is_some_and(|sync| sync.synced_mqtt == usize::from(count))
                },
            )
            .with_context(|| format!("{:?}", daemon_b.status().map(|s| s.ap_sync)))?;
        }
        Ok(Self {
            mqtt,
            daemon_a,
            daemon_b,
            aps,
            charon_a,
            charon_b,
            lab,
            _scratch: scratch,
        })
    }

    /// Node loss of A: its link cut, its daemon and IKE daemon killed at
    /// once.
    pub fn lose_a(&mut self) -> Result<Loss> {
        let started = Instant::now();
        self.daemon_a.signal(libc::SIGKILL);
        crate::lab::ip(&["-n", &self.lab.a, "link", "set", "eth1", "down"])?;
        let cut = Instant::now();
        self.charon_a.kill();
        if let Some(mqtt) = &mut self.mqtt {
            mqtt.lose_a();
        }
        Ok(Loss { started, cut })
    }
}

impl ApFailover {
    /// A planned switchover: A hands mastership to B (`wimark-ha
    /// switchover`); returns when it was asked. Everything stays up.
    pub fn switch_over(&self) -> Result<Instant> {
        let asked = Instant::now();
        let response = wimark_ha::control::request(
            &self.daemon_a.socket,
            &wimark_ha::control::Request::Switchover {
                instance: None,
                back: false,
            },
        )?;
        if !response.ok {
            bail!("switchover refused: {response:?}");
        }
        crate::daemon::wait_until(Duration::from_secs(5), "B MASTER", || {
            self.daemon_b.state() == Some(State::Master)
        })?;
        Ok(asked)
    }
}

/// When a server was lost: from `started` (the first kill) to `cut` (its
/// link down: nothing can pass through it after).
#[derive(Clone, Copy, Debug)]
pub struct Loss {
    pub started: Instant,
    pub cut: Instant,
}

/// The MQTT topic the lab's brokers carry.
pub const MQTT_TOPIC: &str = "wimark/lab";

/// A process in a lab namespace, killed on drop.
struct LabProcess(Option<Child>);

impl LabProcess {
    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// MQTT as the controller runs it: a mosquitto broker on each server, a
/// publisher on each feeding it a message every 100 ms, and one
/// `mosquitto_sub` per AP to the VIP whose messages are timed.
pub struct Mqtt {
    broker_a: LabProcess,
    publisher_a: LabProcess,
    _broker_b: LabProcess,
    _publisher_b: LabProcess,
    _subscribers: Vec<LabProcess>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    /// Per AP, when its messages arrived.
    received: Arrivals,
}

impl Mqtt {
    pub fn start(lab: &ApLab, dir: &Path, keepalive_s: u16) -> Result<Self> {
        use std::{
            io::{BufRead as _, Write as _},
            sync::{atomic::Ordering, Arc, Mutex},
        };
        for binary in [
            "/usr/sbin/mosquitto",
            "/usr/bin/mosquitto_sub",
            "/usr/bin/mosquitto_pub",
        ] {
            if !Path::new(binary).exists() {
                bail!("{binary} is missing: the AP lab's MQTT needs mosquitto and mosquitto-clients (cargo xtask prereqs)");
            }
        }
        std::fs::create_dir_all(dir)?;
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            "listener 1883 0.0.0.0\nallow_anonymous true\npersistence false\nlog_dest stderr\n",
        )?;
        let in_ns = |namespace: &str, program: &str| {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", namespace, program]);
            command
        };
        let broker = |namespace: &str, name: &str| -> Result<LabProcess> {
            Ok(LabProcess(Some(
                in_ns(namespace, "mosquitto")
                    .arg("-c")
                    .arg(&conf)
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(dir.join(format!("{name}.log")))?)
                    .spawn()
                    .context("starting mosquitto")?,
            )))
        };
        let broker_a = broker(&lab.a, "broker-a")?;
        let broker_b = broker(&lab.b, "broker-b")?;
        // The brokers listen before anyone connects.
        for server in [&lab.a, &lab.b] {
            crate::daemon::wait_until(Duration::from_secs(5), "mosquitto listening", || {
                crate::lab::in_netns(server, || {
                    std::net::TcpStream::connect(("127.0.0.1", 1883)).is_ok()
                })
                .unwrap_or(false)
            })?;
        }
        let publisher = |namespace: &str| -> Result<LabProcess> {
            Ok(LabProcess(Some(
                in_ns(namespace, "mosquitto_pub")
                    .args(["-h", "127.0.0.1", "-t", MQTT_TOPIC, "-l"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting mosquitto_pub")?,
            )))
        };
        let mut publisher_a = publisher(&lab.a)?;
        let mut publisher_b = publisher(&lab.b)?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut inputs: Vec<std::process::ChildStdin> = [&mut publisher_a, &mut publisher_b]
            .into_iter()
            .filter_map(|p| p.0.as_mut().and_then(|c| c.stdin.take()))
            .collect();
        threads.push(thread::spawn({
            let stop = stop.clone();
            move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    for input in &mut inputs {
                        let _ = writeln!(input, "{n}");
                        let _ = input.flush();
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }));
        let mut subscribers = Vec::new();
        let mut received = Vec::new();
        for (i, ap) in lab.aps.iter().enumerate() {
            let mut child = in_ns(ap, "mosquitto_sub")
                .args(["-h", VIP, "-t", MQTT_TOPIC, "-k", &keepalive_s.to_string()])
                .args(["-i", &format!("ap{}", i + 1)])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("starting mosquitto_sub")?;
            let stdout = child.stdout.take().context("mosquitto_sub stdout")?;
            let seen = Arc::new(Mutex::new(Vec::new()));
            received.push(seen.clone());
            threads.push(thread::spawn(move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    if line.is_err() {
                        break;
                    }
                    if let Ok(mut seen) = seen.lock() {
                        seen.push(Instant::now());
                    }
                }
            }));
            subscribers.push(LabProcess(Some(child)));
        }
        let mqtt = Self {
            broker_a,
            publisher_a,
            _broker_b: broker_b,
            _publisher_b: publisher_b,
            _subscribers: subscribers,
            stop,
            threads,
            received,
        };
        crate::daemon::wait_until(Duration::from_secs(10), "every AP receiving MQTT", || {
            let now = Instant::now();
            mqtt.back_after(Loss {
                started: now - Duration::from_millis(500),
                cut: now - Duration::from_millis(500),
            })
            .iter()
            .all(Option::is_some)
        })?;
        Ok(mqtt)
    }

    /// The lost server's broker and publisher go with it.
    pub fn lose_a(&mut self) {
        self.broker_a.kill();
        self.publisher_a.kill();
    }

    /// Per AP, the first message after the cut, timed from the loss.
    pub fn back_after(&self, loss: Loss) -> Vec<Option<Duration>> {
        back_after(&self.received, loss)
    }

    /// Waits until every AP receives again, or `limit` after the loss.
    pub fn wait_all_back(&self, loss: Loss, limit: Duration) -> Vec<Option<Duration>> {
        wait_all_back(&self.received, loss, limit)
    }

    /// Per AP, the longest silence in the messages from `from` to `until`.
    pub fn longest_gap(&self, from: Instant, until: Instant) -> Vec<Duration> {
        longest_gap(&self.received, from, until)
    }
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // The subscribers' readers end when their processes are killed
        // (fields drop after this), so only the feeder is joined here.
        if let Some(feeder) = self.threads.drain(..1).next() {
            let _ = feeder.join();
        }
    }
}
