//! The failover lab: two servers and an AP behind a bridge, a VRRP pair
//! (wimark-ha or keepalived) on the servers, a 1 kHz UDP probe stream from
//! the AP to the VIP, and a capture on the bridge. [`FailoverLab::fail`]
//! breaks the active node one way or another and returns the timeline as the
//! wire and the AP saw it — not as the daemons report it.
//!
//! ```text
//!  ns a (server A) eth1 ── a-port ─┐
//!  ns b (server B) eth1 ── b-port ─┼─ br0 (ns sw, captured)
//!  ns ap (the AP)  eth0 ── ap-port ┘
//! ```

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use wimark_ha::vrrp::Multiplier;

use crate::{
    capture::{realtime_ns, Capture, Seen},
    daemon::{config_with_daemon, has_address, wait_until, Daemon},
    keepalived::{Instance, Keepalived},
    lab::{in_netns, ip, Lab},
};

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
pub const SERVER_A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const SERVER_B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub const AP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 101);
/// NAT-T, as an AP's IPsec keepalives: the XDP monitor counts it as AP traffic.
const PROBE_PORT: u16 = 4500;

/// Which VRRP implementation runs on both servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pair {
    /// wimark-ha, VRRPv3 10 ms with fast detection 1 ms x 3.
    WimarkHaFast,
    /// keepalived, VRRPv3 at 10 ms.
    KeepalivedV3Fast,
    /// keepalived with the vendor's settings: VRRPv2, 1 s, auth PASS.
    KeepalivedVendor,
}

impl Pair {
    pub fn name(self) -> &'static str {
        match self {
            Pair::WimarkHaFast => "wimark-ha (VRRPv3 10 ms, fast detection 1 ms x 3)",
            Pair::KeepalivedV3Fast => "keepalived 2.2.7 (VRRPv3 10 ms)",
            Pair::KeepalivedVendor => "keepalived 2.2.7 (vendor config: VRRPv2 1 s)",
        }
    }

    /// One advert interval: the failure instant is randomised within it.
    pub fn advert_interval(self) -> Duration {
        match self {
            Pair::WimarkHaFast | Pair::KeepalivedV3Fast => Duration::from_millis(10),
            Pair::KeepalivedVendor => Duration::from_secs(1),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The active node's link cut and its daemon SIGKILLed together.
    NodeLoss,
    /// Only the daemon SIGKILLed (the node keeps its VIP and answers).
    KillDaemon,
    /// Planned: `wimark-ha switchover` (keepalived: SIGTERM, its priority 0).
    Switchover,
}

impl Failure {
    pub fn name(self) -> &'static str {
        match self {
            Failure::NodeLoss => "node loss (link cut + SIGKILL)",
            Failure::KillDaemon => "daemon SIGKILLed alone",
            Failure::Switchover => "planned switchover",
        }
    }
}

enum Node {
    WimarkHa(Daemon),
    Keepalived(Keepalived),
}

/// What one failover looked like. Times are ms from the failure instant.
#[derive(Clone, Debug)]
pub struct Timeline {
    pub last_old_advert_ms: Option<f64>,
    pub first_new_garp_ms: Option<f64>,
    pub first_new_advert_ms: Option<f64>,
    /// First GARP of the new node minus the old node's last advert: the
    /// takeover as the wire saw it.
    pub takeover_ms: Option<f64>,
    /// Longest silence in the probe replies around the failure.
    pub probe_gap_ms: f64,
    pub probes_lost: u64,
    /// The new master's own account, when it is wimark-ha.
    pub reported: Option<wimark_ha::records::TransitionRecord>,
    /// The failure instant, CLOCK_REALTIME in ns: the zero of the times above.
    pub failed_at_unix_ns: u64,
    /// The backup's fast-rule window just before the failure (wimark-ha).
    pub window_ms: Option<f64>,
}

struct Probe {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<(u64, u64)>>>,
    replies: Arc<Mutex<Vec<(u64, u64)>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

pub struct FailoverLab {
    pub lab: Lab,
    pub a: String,
    pub b: String,
    pub ap: String,
    pub sw: String,
    pair: Pair,
    nodes: Vec<Node>,
    capture: Option<Capture>,
    probe: Option<Probe>,
    stop_responders: Arc<AtomicBool>,
    /// More config for server A's and server B's daemons (wimark-ha pairs).
    extra: [String; 2],
    /// `fast_detect.multiplier` of the wimark-ha pair (auto, the packaged
    /// default, unless tuned).
    fast_multiplier: Multiplier,
    /// More `[daemon]` config for both (e.g. `advert_senders`).
    daemon_extra: String,
    /// stress-ng in both servers, while the lab lasts ([`saturate`](Self::saturate)).
    load: Vec<crate::lab::Stress>,
}

/// A backup's detection window in a line: the window, its basis, the gap
/// percentiles it rests on (ms).
pub fn describe_window(d: &wimark_ha::vrrp::WindowStatus) -> String {
    let ms = |v: Option<Duration>| v.map_or("-".to_string(), |v| format!("{:.2}", v.as_secs_f64() * 1e3));
    format!(
        "{} ms ({}, multiplier {}); gaps p50 {} p99 {} p99.9 {} max {} ms over {} gaps; {} false takeover(s)",
        ms(d.window),
        d.basis.map_or("-", |b| b.name()),
        d.multiplier,
        ms(d.p50),
        ms(d.p99),
        ms(d.p999),
        ms(d.max),
        d.gaps,
        d.false_takeovers
    )
}

/// `multiplier` as the config file writes it.
pub fn multiplier_toml(multiplier: Multiplier) -> String {
    match multiplier {
        Multiplier::Fixed(n) => n.to_string(),
        Multiplier::Auto => "\"auto\"".to_string(),
    }
}

fn random_below(limit: Duration) -> Duration {
    let seed = realtime_ns() ^ (std::process::id() as u64).rotate_left(32);
    let mut x = seed | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    Duration::from_nanos(x % limit.as_nanos().max(1) as u64)
}

impl FailoverLab {
    pub fn new(pair: Pair) -> Result<Self> {
        Self::with_extra(pair, Default::default())
    }

    /// The same, with `extra` config for A's and B's daemons (e.g. `[roles]`).
    pub fn with_extra(pair: Pair, extra: [String; 2]) -> Result<Self> {
        Self::with_options(pair, extra, Multiplier::Auto)
    }

    /// The same, with the wimark-ha pair's fast-detection multiplier.
    pub fn with_options(
        pair: Pair,
        extra: [String; 2],
        fast_multiplier: Multiplier,
    ) -> Result<Self> {
        Self::with_daemon(pair, extra, fast_multiplier, "")
    }

    /// The same, with more `[daemon]` config for both wimark-ha daemons.
    pub fn with_daemon(
        pair: Pair,
        extra: [String; 2],
        fast_multiplier: Multiplier,
        daemon_extra: &str,
    ) -> Result<Self> {
        let mut lab = Lab::new()?;
        let a = lab.namespace("a", false)?;
        let b = lab.namespace("b", false)?;
        let ap = lab.namespace("ap", false)?;
        let sw = lab.namespace("sw", false)?;
        lab.veth((&a, "eth1"), (&sw, "a-port"))?;
        lab.veth((&b, "eth1"), (&sw, "b-port"))?;
        lab.veth((&ap, "eth0"), (&sw, "ap-port"))?;
        lab.bridge(&sw, "br0", &["a-port", "b-port", "ap-port"])?;
        lab.address(&a, "eth1", &format!("{SERVER_A}/24"))?;
        lab.address(&b, "eth1", &format!("{SERVER_B}/24"))?;
        lab.address(&ap, "eth0", &format!("{AP}/24"))?;
        let mut this = Self {
            lab,
            a,
            b,
            ap,
            sw,
            pair,
            nodes: Vec::new(),
            capture: None,
            probe: None,
            stop_responders: Arc::new(AtomicBool::new(false)),
            extra,
            fast_multiplier,
            daemon_extra: daemon_extra.to_string(),
            load: Vec::new(),
        };
        this.start_pair()?;
        for namespace in [this.a.clone(), this.b.clone()] {
            this.start_responder(&namespace)?;
        }
        this.capture = Some(Capture::start(&this.sw, "br0")?);
        this.probe = Some(this.start_probe()?);
        // Let the AP resolve the VIP and the stream settle, and the capture
        // see at least one advert of the active node.
        thread::sleep(Duration::from_millis(300).max(2 * pair.advert_interval()));
        Ok(this)
    }

    fn start_node(&self, namespace: &str, name: &str, priority: u8, extra: &str) -> Result<Node> {
        // A pair names its one peer (as the packaged config does): the fast
        // rule then needs no priority skew.
        let peer = if name == "a" { SERVER_B } else { SERVER_A };
        Ok(match self.pair {
            Pair::WimarkHaFast => Node::WimarkHa(Daemon::start(namespace, name, |s| {
                config_with_daemon(s, priority, &self.daemon_extra, &format!("version = 3\nadvert_interval = \"10ms\"\nvirtual_ips = [\"10.77.0.100/24\"]\npeers = [\"{peer}\"]\nfast_detect = {{ interval = \"1ms\", multiplier = {} }}\n\n{extra}", multiplier_toml(self.fast_multiplier)))
            })?),
            Pair::KeepalivedV3Fast => Node::Keepalived(Keepalived::start(
                namespace,
                name,
                &Instance::v3_10ms(priority),
            )?),
            Pair::KeepalivedVendor => Node::Keepalived(Keepalived::start(
                namespace,
                name,
                &Instance::vendor(priority),
            )?),
        })
    }

    fn start_pair(&mut self) -> Result<()> {
        let limit = 4 * self.pair.advert_interval() + Duration::from_secs(3);
        let a = self.start_node(&self.a.clone(), "a", 200, &self.extra[0].clone())?;
        self.nodes.push(a);
        let a_ns = self.a.clone();
        wait_until(limit, "server A to hold the VIP", || {
            has_address(&a_ns, "eth1", "10.77.0.100")
        })?;
        let b = self.start_node(&self.b.clone(), "b", 100, &self.extra[1].clone())?;
        self.nodes.push(b);
        // B settles as backup (a keepalived backup reports BACKUP at once).
        thread::sleep(Duration::from_millis(200).max(self.pair.advert_interval() * 2));
        if has_address(&self.b, "eth1", "10.77.0.100") {
            bail!("server B took the VIP while A is master");
        }
        // A wimark-ha backup arms its fast rule once A's stream has run its
        // warm-up (and, auto, once it has learned the gaps): until then
        // only the RFC timer would judge a failure.
        if let Some(Node::WimarkHa(b)) = self.nodes.get(1) {
            b.wait_fast_rule_settled()?;
        }
        Ok(())
    }

    fn start_responder(&self, namespace: &str) -> Result<()> {
        let socket = in_netns(namespace, || {
            UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PROBE_PORT))
        })??;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let stop = self.stop_responders.clone();
        thread::spawn(move || {
            let mut buffer = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buffer) {
                    let _ = socket.send_to(&buffer[..n], from);
                }
            }
        });
        Ok(())
    }

    fn start_probe(&self) -> Result<Probe> {
        let socket = in_netns(&self.ap, || UdpSocket::bind(SocketAddrV4::new(AP, 0)))??;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let sender = socket.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let replies = Arc::new(Mutex::new(Vec::new()));
        let send_thread = thread::spawn({
            let (stop, sent) = (stop.clone(), sent.clone());
            move || {
                let start = Instant::now();
                let mut seq: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    let _ = sender.send_to(&seq.to_be_bytes(), SocketAddrV4::new(VIP, PROBE_PORT));
                    sent.lock().expect("probe").push((seq, realtime_ns()));
                    seq += 1;
                    // 1 kHz on absolute deadlines.
                    let next = start + Duration::from_millis(seq);
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        thread::sleep(wait);
                    }
                }
            }
        });
        let receive_thread = thread::spawn({
            let (stop, replies) = (stop.clone(), replies.clone());
            move || {
                let mut buffer = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((8, _)) = socket.recv_from(&mut buffer) {
                        let seq = u64::from_be_bytes(buffer[..8].try_into().expect("8 bytes"));
                        replies.lock().expect("probe").push((seq, realtime_ns()));
                    }
                }
            }
        });
        Ok(Probe {
            stop,
            sent,
            replies,
            threads: vec![send_thread, receive_thread],
        })
    }

    /// The AP opens an IKE session with the VIP (one IKE_AUTH message to
    /// port 500): what "the AP is back" means to the daemon, unlike the
    /// probe stream, which is ESP-like traffic of a session that already
    /// exists.
    pub fn ap_opens_session(&self) -> Result<()> {
        let socket = in_netns(&self.ap, || UdpSocket::bind(SocketAddrV4::new(AP, 500)))??;
        // IKE_AUTH: what the monitor takes for an AP's IKE session.
        socket.send_to(&crate::frames::ike_header(35), SocketAddrV4::new(VIP, 500))?;
        Ok(())
    }

    /// Saturates every core from both servers' namespaces (stress-ng) until
    /// the lab is dropped.
    pub fn saturate(&mut self) -> Result<()> {
        for namespace in [self.a.clone(), self.b.clone()] {
            self.load.push(crate::lab::stress(&namespace)?);
        }
        Ok(())
    }

    /// Breaks the active node (A) at a random instant within one advert
    /// interval and waits for B to take over; the timeline.
    pub fn fail(&mut self, failure: Failure) -> Result<Timeline> {
        let window_ms = match self.nodes.get(1) {
            Some(Node::WimarkHa(b)) => b
                .instance()
                .ok()
                .and_then(|i| i.detection)
                .and_then(|d| d.window)
                .map(|w| w.as_secs_f64() * 1e3),
            _ => None,
        };
        thread::sleep(random_below(self.pair.advert_interval()));
        let t0 = realtime_ns();
        match failure {
            Failure::NodeLoss => {
                ip(&["-n", &self.sw, "link", "set", "a-port", "down"])?;
                self.kill_a();
            }
            Failure::KillDaemon => self.kill_a(),
            Failure::Switchover => match &mut self.nodes[0] {
                Node::WimarkHa(daemon) => {
                    let response = wimark_ha::control::request(
                        &daemon.socket,
                        &wimark_ha::control::Request::Switchover {
                            instance: None,
                            back: false,
                        },
                    )?;
                    if !response.ok {
                        bail!("switchover refused: {:?}", response.error);
                    }
                }
                Node::Keepalived(_) => self.signal_a(libc::SIGTERM),
            },
        }
        let limit = 5 * self.pair.advert_interval() + Duration::from_secs(2);
        let b = self.b.clone();
        wait_until(limit, "server B to hold the VIP", || {
            has_address(&b, "eth1", "10.77.0.100")
        })?;
        // Let the probe stream show the recovery.
        thread::sleep(Duration::from_millis(300));
        Ok(Timeline {
            window_ms,
            ..self.timeline(t0)
        })
    }

    /// The process of server A's and server B's VRRP daemon.
    pub fn pids(&self) -> Vec<Option<u32>> {
        self.nodes
            .iter()
            .map(|node| match node {
                Node::WimarkHa(daemon) => daemon.pid(),
                Node::Keepalived(keepalived) => keepalived.pid(),
            })
            .collect()
    }

    /// Adverts from `source` the capture on the bridge has seen.
    pub fn adverts_from(&self, source: Ipv4Addr) -> usize {
        self.capture.as_ref().map_or(0, |c| {
            c.records()
                .iter()
                .filter(|(_, s)| matches!(s, Seen::Advert { source: from, .. } if *from == std::net::IpAddr::V4(source)))
                .count()
        })
    }

    /// The distinct TOS bytes of the adverts the capture has seen, sorted.
    /// The (opcode, target MAC) of the gratuitous ARPs seen, distinct.
    pub fn garp_fields_seen(&self) -> Vec<(u16, [u8; 6])> {
        let mut seen: Vec<(u16, [u8; 6])> = self.capture.as_ref().map_or(Vec::new(), |c| {
            c.records()
                .iter()
                .filter_map(|(_, s)| match s {
                    Seen::GratuitousArp {
                        opcode, target_mac, ..
                    } => Some((*opcode, *target_mac)),
                    _ => None,
                })
                .collect()
        });
        seen.sort_unstable();
        seen.dedup();
        seen
    }

    pub fn advert_tos_seen(&self) -> Vec<u8> {
        let mut seen: Vec<u8> = self.capture.as_ref().map_or(Vec::new(), |c| {
            c.records()
                .iter()
                .filter_map(|(_, s)| match s {
                    Seen::Advert { tos, .. } => Some(*tos),
                    _ => None,
                })
                .collect()
        });
        seen.sort_unstable();
        seen.dedup();
        seen
    }

    /// Server A's (0) or server B's (1) daemon, when the pair is wimark-ha.
    pub fn daemon(&self, server: usize) -> Option<&Daemon> {
        match self.nodes.get(server)? {
            Node::WimarkHa(daemon) => Some(daemon),
            Node::Keepalived(_) => None,
        }
    }

    /// Each server's VRRP state, as its daemon reports it.
    pub fn states(&self) -> Vec<(&'static str, String)> {
        self.nodes
            .iter()
            .zip(["server A", "server B"])
            .map(|(node, name)| {
                let state = match node {
                    Node::WimarkHa(daemon) => match daemon.instance() {
                        Ok(i) => format!(
                            "{} (priority {}, VIP {})",
                            i.state,
                            i.priority,
                            if i.holds_virtual_ips {
                                "held"
                            } else {
                                "not held"
                            }
                        ),
                        Err(_) => "not running".to_string(),
                    },
                    Node::Keepalived(k) => k
                        .states()
                        .last()
                        .cloned()
                        .unwrap_or_else(|| "starting".to_string()),
                };
                (name, state)
            })
            .collect()
    }

    fn kill_a(&mut self) {
        match &mut self.nodes[0] {
            Node::WimarkHa(daemon) => {
                daemon.signal(libc::SIGKILL);
                daemon.wait();
            }
            Node::Keepalived(keepalived) => keepalived.kill(),
        }
    }

    /// Stops server B's wimark-ha (SIGTERM) and starts it again.
    pub fn restart_b(&mut self) -> Result<()> {
        match &mut self.nodes[1] {
            Node::WimarkHa(daemon) => {
                daemon.signal(libc::SIGTERM);
                daemon.wait();
                daemon.restart()
            }
            Node::Keepalived(_) => bail!("restart_b is for wimark-ha pairs"),
        }
    }

    fn signal_a(&mut self, signal: i32) {
        if let Node::Keepalived(keepalived) = &mut self.nodes[0] {
            keepalived.signal(signal);
        }
    }

    fn timeline(&self, t0: u64) -> Timeline {
        let ms = |t: u64| (t as f64 - t0 as f64) / 1e6;
        let records = self
            .capture
            .as_ref()
            .map(Capture::records)
            .unwrap_or_default();
        let b_mac = mac_of(&self.b, "eth1");
        let last_old_advert = records
            .iter()
            .filter(|(_, s)| matches!(s, Seen::Advert { source, .. } if *source == std::net::IpAddr::V4(SERVER_A)))
            .map(|(t, _)| *t)
            .max();
        let first_new_garp = records
            .iter()
            .filter(|(t, s)| *t >= t0 && matches!(s, Seen::GratuitousArp { address, mac, .. } if *address == VIP && Some(*mac) == b_mac))
            .map(|(t, _)| *t)
            .min();
        let first_new_advert = records
            .iter()
            .filter(|(t, s)| *t >= t0 && matches!(s, Seen::Advert { source, priority, .. } if *source == std::net::IpAddr::V4(SERVER_B) && *priority > 0))
            .map(|(t, _)| *t)
            .min();
        let (gap, lost) = self
            .probe
            .as_ref()
            .map(|p| probe_outage(p, t0))
            .unwrap_or((0.0, 0));
        let reported = match &self.nodes.get(1) {
            Some(Node::WimarkHa(daemon)) => daemon
                .instance()
                .ok()
                .and_then(|i| i.history.last().cloned()),
            _ => None,
        };
        Timeline {
            last_old_advert_ms: last_old_advert.map(ms),
            first_new_garp_ms: first_new_garp.map(ms),
            first_new_advert_ms: first_new_advert.map(ms),
            takeover_ms: match (last_old_advert, first_new_garp) {
                (Some(last), Some(garp)) => Some((garp as f64 - last as f64) / 1e6),
                _ => None,
            },
            probe_gap_ms: gap,
            probes_lost: lost,
            reported,
            failed_at_unix_ns: t0,
            window_ms: None,
        }
    }
}

/// The longest gap between replies from 200 ms before the failure to the
/// last reply, and how many probes sent in that window never got one.
fn probe_outage(probe: &Probe, t0: u64) -> (f64, u64) {
    let from = t0.saturating_sub(200_000_000);
    let replies = probe.replies.lock().expect("probe").clone();
    let sent = probe.sent.lock().expect("probe").clone();
    let mut times: Vec<u64> = replies
        .iter()
        .map(|(_, t)| *t)
        .filter(|t| *t >= from)
        .collect();
    times.sort_unstable();
    let gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0) as f64 / 1e6;
    let answered: BTreeMap<u64, u64> = replies.into_iter().collect();
    let last_reply = times.last().copied().unwrap_or(0);
    let lost = sent
        .iter()
        .filter(|(seq, t)| {
            *t >= from && *t + 50_000_000 <= last_reply && !answered.contains_key(seq)
        })
        .count();
    (gap, lost as u64)
}

/// The MAC of `interface` in `namespace` (from `ip -br link`: sysfs shows
/// the namespace it was mounted in, not the thread's).
fn mac_of(namespace: &str, interface: &str) -> Option<[u8; 6]> {
    let output = std::process::Command::new("ip")
        .args(["-n", namespace, "-br", "link", "show", "dev", interface])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let field = text.split_whitespace().nth(2)?;
    let bytes: Vec<u8> = field
        .split(':')
        .filter_map(|h| u8::from_str_radix(h, 16).ok())
        .collect();
    bytes.try_into().ok()
}

impl Drop for FailoverLab {
    fn drop(&mut self) {
        self.load.clear();
        if let Some(probe) = self.probe.take() {
            probe.stop.store(true, Ordering::Relaxed);
            for thread in probe.threads {
                let _ = thread.join();
            }
        }
        self.stop_responders.store(true, Ordering::Relaxed);
        self.capture = None;
        self.nodes.clear();
    }
}
