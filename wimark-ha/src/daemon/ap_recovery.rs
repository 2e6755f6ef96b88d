//! The AP recovery's IO (`[ap_recovery]`): the AP table goes to the peer
//! while we are MASTER and comes from it while it is, over an authenticated
//! UDP socket on the peer link; after a takeover the IKE hook is run with
//! the APs the old master had. With `ike_vici`, the IKE daemon's IKE_SAs
//! (each AP's port and identity) are read every few seconds and synced
//! with the table.
//!
//! Owns: the sync socket, the key, the hook process, the IKE daemon
//! reader. Must not: run on the
//! engine thread, or delay the fast path (the hook runs after VIP + GARP,
//! and after the master stack when [roles] follows the instance).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

mod hook;

pub use hook::run_hook;
use hook::{stopped, STOPPED};

use crate::{
    clock::monotonic_now_ns,
    config::ApRecoveryConfig,
    monitor::{read_aps, read_mqtt, Monitor, ACTIVE_AP_WINDOW},
    records::{DaemonStatus, State},
    recovery::{
        ike_sas::{self, IkePeers},
        mqtt::sessions_by_ap,
        plan::Plan,
        sync::{self, Received, Sender, SyncStatus, SyncedAp, MIN_KEY},
        ApList, ApOutcome, ApResult, HookReport, RecoveryRecord,
    },
};

/// Failures kept in the journal entry.
const FAILURES_KEPT: usize = 10;

/// Reads the sync key: a file only root can read, at least [`MIN_KEY`]
/// bytes (trailing whitespace, e.g. from `openssl rand -hex 32 > key`, is
/// not part of it).
pub fn read_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt as _;
    let metadata = std::fs::metadata(path)
        .with_context(|| format!("[ap_recovery] sync_key_file {}", path.display()))?;
    let mode = metadata.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "[ap_recovery] sync_key_file {}: mode {:o} lets others read the key; chmod 600 it",
            path.display(),
            mode & 0o777
        );
    }
    let mut key = std::fs::read(path)
        .with_context(|| format!("[ap_recovery] sync_key_file {}", path.display()))?;
    while key.last().is_some_and(u8::is_ascii_whitespace) {
        key.pop();
    }
    if key.len() < MIN_KEY {
        bail!(
            "[ap_recovery] sync_key_file {}: {} bytes; at least {MIN_KEY} are needed (e.g. openssl rand -hex 32)",
            path.display(),
            key.len()
        );
    }
    Ok(key)
}

/// The running sync, shared with the observer (which reads the table after
/// a takeover) and the status snapshot.
#[derive(Clone)]
pub struct ApRecovery {
    pub config: ApRecoveryConfig,
    /// The instance's VIPs, for the hooks' AP list.
    virtual_ips: Vec<IpAddr>,
    received: Arc<Mutex<Received>>,
    sent: Arc<std::sync::atomic::AtomicU64>,
    monitors: Arc<Mutex<Vec<Monitor>>>,
    monitor: usize,
    /// The IKE daemon's latest listing (`ike_vici`; empty without it).
    ike_peers: tokio::sync::watch::Receiver<IkeReading>,
}

/// One reading of the IKE daemon's IKE_SAs: the last good one, and the
/// error of the latest attempt if it failed.
#[derive(Clone, Debug, Default)]
pub struct IkeReading {
    pub peers: Option<IkePeers>,
    pub error: Option<String>,
}

/// Reads the IKE daemon at `socket` every [`ike_sas::READ_EVERY`], or
/// [`ike_sas::READ_PAUSE_FACTOR`] times as long as the last listing took
/// when that is longer (on both
/// nodes: the backup's charon has nothing on the VIP, and answers at once)
/// and publishes each reading (an address missing from one listing keeps
/// its peers for [`ike_sas::MISSES_KEPT`] listings); a failure keeps the
/// last good listing and is logged at most once a minute.
async fn read_ike_daemon(
    socket: std::path::PathBuf,
    virtual_ips: Vec<IpAddr>,
    readings: tokio::sync::watch::Sender<IkeReading>,
) {
    let mut last_warning: Option<Instant> = None;
    let mut pause = Duration::ZERO;
    let mut missed = std::collections::BTreeMap::new();
    loop {
        tokio::time::sleep(pause).await;
        let started = Instant::now();
        let result = ike_sas::read(&socket, &virtual_ips).await;
        pause = ike_sas::READ_EVERY.max(started.elapsed() * ike_sas::READ_PAUSE_FACTOR);
        let warn_now = last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
        match &result {
            Ok(peers) if warn_now && peers.beyond_bound + peers.id_too_long > 0 => {
                last_warning = Some(Instant::now());
                tracing::warn!(
                    "IKE daemon: {} IKE_SA(s) beyond {} per AP address and {} with an identity over {} bytes are not synced (logged once a minute)",
                    peers.beyond_bound,
                    ike_sas::MAX_IKE_PEERS_PER_ADDRESS,
                    peers.id_too_long,
                    ike_sas::MAX_IKE_ID
                );
            }
            Err(e) if warn_now => {
                last_warning = Some(Instant::now());
                tracing::warn!("IKE daemon not read: {e}; the AP sync carries no new IKE identities until it answers (logged once a minute)");
            }
            _ => {}
        }
        readings.send_modify(|reading| match result {
            Ok(peers) => {
                reading.peers = Some(ike_sas::carry_over(reading.peers.as_ref(), peers, &mut missed));
                reading.error = None;
            }
            Err(e) => reading.error = Some(e),
        });
    }
}

/// This server's own address on the segment of `peer` (an interface
/// address whose prefix holds it), never one of `vips`; None when the peer
/// is reached through a router (the kernel's choice stands).
fn sync_source(peer: IpAddr, vips: &[IpAddr]) -> Option<IpAddr> {
    let addresses = nix::ifaddrs::getifaddrs().ok()?.filter_map(|a| {
        let address = a.address?;
        let netmask = a.netmask?;
        let pair = match (address.as_sockaddr_in(), netmask.as_sockaddr_in()) {
            (Some(a), Some(m)) => (IpAddr::V4(a.ip()), IpAddr::V4(m.ip())),
            _ => match (address.as_sockaddr_in6(), netmask.as_sockaddr_in6()) {
                (Some(a), Some(m)) => (IpAddr::V6(a.ip()), IpAddr::V6(m.ip())),
                _ => return None,
            },
        };
        Some(pair)
    });
    sync::source_towards(addresses, peer, vips)
}

impl ApRecovery {
    /// Binds the sync socket and starts sending and receiving.
    pub async fn start(
        config: ApRecoveryConfig,
        monitors: Arc<Mutex<Vec<Monitor>>>,
        monitor: usize,
        virtual_ips: Vec<IpAddr>,
        status: Arc<Mutex<DaemonStatus>>,
    ) -> anyhow::Result<(Self, Vec<tokio::task::JoinHandle<()>>)> {
        let key = Arc::new(read_key(&config.sync_key_file)?);
        let unspecified = match config.sync_peer {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let socket = Arc::new(
            tokio::net::UdpSocket::bind(SocketAddr::new(unspecified, config.sync_port))
                .await
                .with_context(|| {
                    format!("[ap_recovery] sync socket on port {}", config.sync_port)
                })?,
        );
        // The peer accepts datagrams only from the address it knows us by;
        // left to the kernel, the source may be a VIP (one with a longer
        // prefix than the server's own address wins the route).
        let send_socket = match sync_source(config.sync_peer, &virtual_ips) {
            Some(source) => Arc::new(
                tokio::net::UdpSocket::bind(SocketAddr::new(source, 0))
                    .await
                    .with_context(|| format!("[ap_recovery] sync socket from {source}"))?,
            ),
            None => socket.clone(),
        };
        let (readings, ike_peers) = tokio::sync::watch::channel(IkeReading::default());
        let mut tasks = Vec::new();
        if let Some(socket) = config.ike_vici.clone() {
            tasks.push(tokio::spawn(read_ike_daemon(
                socket,
                virtual_ips.clone(),
                readings,
            )));
        }
        let recovery = Self {
            received: Arc::new(Mutex::new(Received::new(config.sync_peer))),
            sent: Arc::default(),
            virtual_ips,
            config,
            monitors,
            monitor,
            ike_peers,
        };
        tasks.push(tokio::spawn(recovery.clone().receive(socket.clone(), key.clone())));
        tasks.push(tokio::spawn(recovery.clone().send(send_socket, key, status)));
        Ok((recovery, tasks))
    }

    async fn receive(self, socket: Arc<tokio::net::UdpSocket>, key: Arc<Vec<u8>>) {
        let mut buffer = vec![0u8; 2048];
        let mut last_warning: Option<Instant> = None;
        loop {
            let (len, from) = match socket.recv_from(&mut buffer).await {
                Ok(received) => received,
                Err(e) => {
                    tracing::warn!("AP sync: receive: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let result = self
                .received
                .lock()
                .map(|mut r| r.accept(&key, from.ip(), &buffer[..len], Instant::now()));
            if let Ok(Err(e)) = result {
                // Counted in status; logged at most once a minute.
                if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    last_warning = Some(Instant::now());
                    tracing::warn!(source = %from.ip(), "AP sync datagram ignored: {e} (counted in status; logged once a minute)");
                }
            }
        }
    }

    async fn send(
        self,
        socket: Arc<tokio::net::UdpSocket>,
        key: Arc<Vec<u8>>,
        status: Arc<Mutex<DaemonStatus>>,
    ) {
        // Sequence numbers keep rising across restarts: they start at the
        // wall clock in ns.
        let mut sequence = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let mut sender = Sender::default();
        let destination = SocketAddr::new(self.config.sync_peer, self.config.sync_port);
        let mut ticker = tokio::time::interval(sync::SEND_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // When this term as master began: a connection last seen before it
        // belongs to an earlier term, and the APs have since moved it to the
        // peer (no FIN or RST from the AP ever removes it here).
        let mut term_started_ns = None;
        loop {
            ticker.tick().await;
            let master = status.lock().is_ok_and(|s| {
                s.instances
                    .iter()
                    .any(|i| i.name == self.config.instance && i.state == State::Master)
            });
            if !master {
                // A new term as master sends the whole table again.
                sender = Sender::default();
                term_started_ns = None;
                continue;
            }
            let since = *term_started_ns.get_or_insert_with(monotonic_now_ns);
            let due = sender.due(&self.own_aps(Some(since)), Instant::now());
            let mut rest = &due[..];
            while !rest.is_empty() {
                sequence += 1;
                let (datagram, carried) = sync::encode(&key, sequence, rest);
                rest = &rest[carried..];
                match socket.send_to(&datagram, destination).await {
                    Ok(_) => {
                        self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) => tracing::debug!("AP sync: send to {destination}: {e}"),
                }
            }
        }
    }

    /// The APs our own XDP monitor saw within the activity window, with the
    /// MQTT connections seen since `connections_since_ns` (None: none) and
    /// the IKE_SAs our IKE daemon lists for them.
    fn own_aps(&self, connections_since_ns: Option<u64>) -> Vec<SyncedAp> {
        let mut aps = active_aps(&self.monitors, self.monitor, connections_since_ns);
        if let Some(peers) = &self.ike_peers.borrow().peers {
            for ap in &mut aps {
                if let Some(listed) = peers.by_address.get(&ap.address) {
                    ap.ike_peers = listed.clone();
                }
            }
        }
        aps
    }

    /// The recovery of a takeover decided now: from the APs the old master
    /// had (synced) and those we saw ourselves ([`crate::recovery::plan`]
    /// decides).
    pub fn plan(&self) -> Plan {
        let synced = self
            .received
            .lock()
            .map(|mut r| r.aps(Instant::now()))
            .unwrap_or_default();
        crate::recovery::plan::plan(
            &self.config.instance,
            &self.virtual_ips,
            self.own_aps(None),
            synced,
            self.config.mqtt_kick,
        )
    }

    pub fn status(&self) -> SyncStatus {
        let mut status = self
            .received
            .lock()
            .map(|mut r| r.status(Instant::now()))
            .unwrap_or_default();
        status.datagrams_sent = self.sent.load(std::sync::atomic::Ordering::Relaxed);
        if self.config.ike_vici.is_some() {
            let reading = self.ike_peers.borrow();
            status.own_ike_peers = reading
                .peers
                .as_ref()
                .map(|p| p.by_address.values().map(Vec::len).sum());
            status.ike_vici_error = reading.error.clone();
        }
        status
    }

    /// Carries `plan` out: the MQTT kicks (paced at `mqtt_kick_rate`, so
    /// thousands take a second or more) and the IKE hook, side by side,
    /// until `stop` says the instance left MASTER: then the kicks end and
    /// the hook is killed — a node that is no longer master must not move
    /// the APs' SAs to itself. Returns the journal's record.
    pub async fn execute(
        &self,
        plan: Plan,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> RecoveryRecord {
        let kicks = async {
            if !self.config.mqtt_kick {
                return None;
            }
            let mut report = crate::recovery::mqtt::KickReport {
                beyond_bound: plan.kicks_beyond_bound,
                ..Default::default()
            };
            if plan.kicks_without_vip > 0 {
                report.errors.push(format!(
                    "{} connection(s) of an address family the instance has no VIP of: not kicked",
                    plan.kicks_without_vip
                ));
            }
            for family in &plan.kicks {
                let kick = crate::recovery::mqtt::kick(
                    family.vip,
                    &family.connections,
                    self.config.mqtt_kick_rate,
                );
                let kicked = tokio::select! {
                    kicked = kick => kicked,
                    () = stopped(stop.clone()) => {
                        report.errors.push(STOPPED.to_string());
                        break;
                    }
                };
                report.connections += kicked.connections;
                report.segments_sent += kicked.segments_sent;
                report.informed += kicked.informed;
                report.errors.extend(kicked.errors);
            }
            Some(report)
        };
        let hook = async {
            match &self.config.ike_hook {
                Some(argv) => Some(
                    run_hook(
                        argv,
                        self.config.ike_hook_timeout,
                        &plan.list,
                        stopped(stop.clone()),
                    )
                    .await,
                ),
                None => None,
            }
        };
        let (mqtt, ike) = tokio::join!(kicks, hook);
        RecoveryRecord {
            expected: plan.list.aps.len(),
            synced: plan.synced,
            ike,
            mqtt,
        }
    }
}

/// The APs monitor `monitor` saw within the activity window; with
/// `connections_since_ns`, each with its MQTT connections seen since then
/// and within [`crate::recovery::mqtt::MQTT_CONNECTION_WINDOW`] (most recent first, at most
/// [`crate::recovery::mqtt::MAX_MQTT_PER_AP`], the rest counted). Costs one map lookup per AP
/// table slot, and per MQTT connection held when connections are asked for.
pub fn active_aps(
    monitors: &Mutex<Vec<Monitor>>,
    monitor: usize,
    connections_since_ns: Option<u64>,
) -> Vec<SyncedAp> {
    let now_ns = monotonic_now_ns();
    let window_ns = ACTIVE_AP_WINDOW.as_nanos() as u64;
    let Ok(monitors) = monitors.lock() else {
        return Vec::new();
    };
    let Some(monitor) = monitors.get(monitor) else {
        return Vec::new();
    };
    let mut connections = match connections_since_ns {
        Some(since) => sessions_by_ap(
            read_mqtt(monitor.ebpf()).unwrap_or_default(),
            since,
            now_ns,
        ),
        None => Default::default(),
    };
    read_aps(monitor.ebpf())
        .unwrap_or_default()
        .into_iter()
        .filter(|ap| now_ns.saturating_sub(ap.last_seen_ns) <= window_ns)
        .map(|ap| {
            let address = IpAddr::from(ap.address);
            let (mqtt, beyond) = connections.remove(&address).unwrap_or_default();
            SyncedAp {
                address,
                ike_port: ap.ike_port,
                age_s: (now_ns.saturating_sub(ap.last_seen_ns) / 1_000_000_000)
                    .min(u64::from(u16::MAX)) as u16,
                mqtt,
                mqtt_beyond_bound: beyond.min(usize::from(u8::MAX)) as u8,
                ike_peers: Vec::new(),
            }
        })
        .collect()
}
