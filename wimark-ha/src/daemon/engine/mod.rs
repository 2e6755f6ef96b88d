//! The engine thread: every instance's state machine, the clock that drives
//! them, and the fast path of a takeover.
//!
//! One thread, realtime (SCHED_FIFO) where permitted, sleeping in epoll on
//! the XDP advert rings, the link-event socket and a wake-up eventfd with a
//! nanosecond timeout until the next absolute deadline (CLOCK_MONOTONIC,
//! `epoll_pwait2`) — never on tokio's millisecond timer wheel. On each
//! wake-up it first drains every advert the kernel recorded, then fires due
//! timers, then carries out the actions: VIP and gratuitous ARP before
//! anything else.

use std::{
    collections::VecDeque,
    io,
    net::IpAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use super::{
    advert_socket::{AdvertSocket, VRRP_GROUP_V4, VRRP_GROUP_V6},
    senders::{Message, SenderPool, Stream, StreamCounters},
};
use crate::{
    clock::{monotonic_now_ns, unix_ms},
    config::InstanceConfig,
    monitor::{AdvertReader, Heard},
    records::{
        DaemonStatus, HeartbeatStatus, IgnoredCounts, IgnoredReason, InstanceStatus, SendGapStatus,
        TransitionRecord,
    },
    vip::{Announcer, InterfaceInfo, Vips},
    vrrp::{Action, Advert, ChecksumMode, Heartbeat, Ignored, Instance, State, Timestamp},
};

pub mod addressed;
mod commands;
mod effects;
mod poller;
mod publish;
mod links;
pub mod sync;
mod tracking;
mod vips;

use addressed::addressed_here;
pub use addressed::LocalAddresses;
pub use poller::make_realtime;
use poller::{drain_eventfd, Poller};

/// Transitions kept per instance for `status`.
const HISTORY_LEN: usize = 64;
/// The longest the loop sleeps with nothing to do.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How stale the published counters may get. Building the status clones
/// every instance's history: at 1 000 wake-ups a second that was most of
/// the engine's CPU. Transitions and VIP changes publish at once.
const STATUS_PERIOD: Duration = Duration::from_millis(50);

pub enum Command {
    Switchover {
        instance: Option<String>,
        /// End the hand-over instead of starting one.
        back: bool,
        reply: mpsc::Sender<Result<String, String>>,
    },
    Shutdown,
    /// Stop for a restart in place: masters tell the peer to wait `hold`
    /// and keep their VIPs.
    RestartHold {
        hold: Duration,
        reply: mpsc::Sender<Result<String, String>>,
    },
    /// A tracker's watcher observed something (`[[instance.track]]`).
    Track {
        /// Indexes into the engine's instances and that instance's trackers.
        instance: usize,
        tracker: usize,
        observation: crate::track::Observation,
    },
    /// The witness's isolation rule with `on_isolation = "release_vip"`
    /// (from the role switcher): the roles instance gives its VIPs up and
    /// stays in FAULT while `isolated`.
    WitnessIsolation { instance: String, isolated: bool },
}

/// How the engine ended.
pub enum Stopped {
    /// Every instance resigned and gave its VIPs up.
    Shutdown,
    /// For a restart in place: these instances were master and still hold
    /// their VIPs.
    Restart(Vec<super::restart::Held>),
}

/// A heartbeat link of an instance (`[[instance.heartbeat]]`): its adverts
/// go out here too, and the peer's adverts here count as heard from the
/// peer's address on the instance's own interface, so the state machine sees
/// one master however many paths it speaks on.
pub struct HeartbeatPath {
    pub interface: InterfaceInfo,
    /// Index into the engine's advert readers.
    pub reader: usize,
    pub socket: Arc<AdvertSocket>,
    /// Our address on this link: the adverts' source.
    pub local: IpAddr,
    pub peer: IpAddr,
    pub link_up: bool,
    pub adverts_received: u64,
    pub last_advert_at: Option<Timestamp>,
}

/// One instance with everything the engine needs to carry out its actions.
pub struct EngineInstance {
    pub config: InstanceConfig,
    pub machine: Instance,
    pub interface: InterfaceInfo,
    /// Index into the engine's advert readers (one per interface).
    pub reader: usize,
    pub socket: Arc<AdvertSocket>,
    pub announcer: Arc<Announcer>,
    pub primary: IpAddr,
    pub heartbeats: Vec<HeartbeatPath>,
    /// The instance's own link is up and has carrier: nothing is sent on it
    /// otherwise (what the kernel would hold could leave later, after this
    /// process is gone).
    link_up: bool,
    /// Resume mastership at start (a restart hold left it to us).
    pub resume: bool,
    destinations: Vec<IpAddr>,
    adverts_sent: u64,
    adverts_received: u64,
    priority_zero_sent: u64,
    priority_zero_received: u64,
    ignored: IgnoredCounts,
    history: VecDeque<TransitionRecord>,
    holds_vips: bool,
    /// VIPs the kernel said left the interface while we hold them, and
    /// when: until put back (`status` does not claim them meanwhile).
    vips_missing: Vec<(IpAddr, Timestamp)>,
    /// VIPs someone else removed that were put back.
    vips_restored: u64,
    fault: Option<String>,
    second_garp_burst: Option<Timestamp>,
    /// The fast stream the senders run for this instance: the machine's
    /// order (advert, interval), rebuilt when a heartbeat link changes.
    stream: Option<(Advert, Duration)>,
    /// Adverts the senders sent for this instance.
    stream_counters: Arc<StreamCounters>,
    /// When this thread last sent an advert itself (the senders' are in
    /// `stream_counters`).
    last_advert_sent_at: Option<Timestamp>,
    /// Failed sends already reported, and when the last report went out.
    stream_failures_reported: (u64, Option<Timestamp>),
    false_takeovers: u64,
    /// `[[instance.track]]`, in config order.
    trackers: Vec<crate::track::Tracker>,
    /// The kernel's index of each interface tracker's link, by tracker
    /// index (`None` while the link does not exist).
    tracked_links: Vec<(usize, Option<u32>)>,
}

impl EngineInstance {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Keeps `record` in the bounded in-memory history `status` shows.
    pub fn remember(&mut self, record: TransitionRecord) {
        if self.history.len() == HISTORY_LEN {
            self.history.pop_front();
        }
        self.history.push_back(record);
    }

    /// The link `reader` listens on, if this instance speaks on it.
    fn link_of(&self, reader: usize) -> Option<&InterfaceInfo> {
        if reader == self.reader {
            return Some(&self.interface);
        }
        self.heartbeats
            .iter()
            .find(|h| h.reader == reader)
            .map(|h| &h.interface)
    }

    /// The source the state machine should see for an advert from `source`
    /// read by `reader`, or `None` when the advert is not this instance's
    /// business on that link.
    fn heard_as(&mut self, reader: usize, source: IpAddr, at: Timestamp) -> Option<IpAddr> {
        if reader == self.reader {
            return Some(source);
        }
        let path = self
            .heartbeats
            .iter_mut()
            .find(|h| h.reader == reader && h.peer == source)?;
        path.adverts_received += 1;
        path.last_advert_at = path.last_advert_at.max(Some(at));
        // Config guarantees exactly one allowed peer when heartbeats exist.
        self.config.allowed_peers.first().copied()
    }

    pub fn new(
        config: InstanceConfig,
        interface: InterfaceInfo,
        primary: IpAddr,
        reader: usize,
        socket: AdvertSocket,
        announcer: Arc<Announcer>,
        heartbeats: Vec<HeartbeatPath>,
    ) -> Self {
        let socket = Arc::new(socket);
        let destinations = if config.unicast_peers.is_empty() {
            vec![if primary.is_ipv4() {
                IpAddr::V4(VRRP_GROUP_V4)
            } else {
                IpAddr::V6(VRRP_GROUP_V6)
            }]
        } else {
            config.unicast_peers.clone()
        };
        let machine = Instance::new(config.params(primary));
        let trackers: Vec<crate::track::Tracker> = config
            .trackers
            .iter()
            .cloned()
            .map(crate::track::Tracker::new)
            .collect();
        let tracked_links = tracking::tracked_links(&config);
        Self {
            config,
            machine,
            interface,
            reader,
            socket,
            announcer,
            primary,
            heartbeats,
            link_up: true,
            resume: false,
            destinations,
            adverts_sent: 0,
            adverts_received: 0,
            priority_zero_sent: 0,
            priority_zero_received: 0,
            ignored: IgnoredCounts::default(),
            history: VecDeque::new(),
            holds_vips: false,
            vips_missing: Vec::new(),
            vips_restored: 0,
            fault: None,
            second_garp_burst: None,
            stream: None,
            stream_counters: Arc::default(),
            last_advert_sent_at: None,
            stream_failures_reported: (0, None),
            false_takeovers: 0,
            trackers,
            tracked_links,
        }
    }
}

pub struct Engine {
    pub instances: Vec<EngineInstance>,
    pub readers: Vec<AdvertReader>,
    pub vips: Vips,
    pub runtime: tokio::runtime::Runtime,
    pub commands: mpsc::Receiver<Command>,
    pub wake: Arc<OwnedFd>,
    pub status: Arc<Mutex<DaemonStatus>>,
    /// Told of every transition, after the fast path is done.
    pub roles: tokio::sync::mpsc::UnboundedSender<crate::roles::RoleEvent>,
    /// The journal, metrics and APs-back watcher (off this thread).
    pub observer: tokio::sync::mpsc::UnboundedSender<super::observer::Observed>,
    /// Link state changes of the peer interfaces (FAULT when down).
    pub links: super::link::LinkWatcher,
    /// CLOCK_MONOTONIC ms of the loop's last turn, for the systemd watchdog.
    pub alive: Arc<std::sync::atomic::AtomicU64>,
    /// Something `status` shows changed beyond the counters: publish now.
    pub status_changed: bool,
    /// How many fast-stream senders to run.
    pub advert_senders: crate::config::AdvertSenders,
    /// The fast-stream senders, started with the loop.
    pub senders: Option<SenderPool>,
    /// This host's addresses, for unicast adverts' destinations.
    pub local_addresses: LocalAddresses,
    /// `[[sync_group]]`s, by member index.
    pub sync_groups: Vec<sync::SyncGroup>,
    /// A group is being followed (its members' `carry_out` do not start
    /// another pass).
    pub syncing: bool,
}

fn now() -> Timestamp {
    Timestamp(monotonic_now_ns())
}

/// The counter an ignored advert goes to.
fn ignored_reason(ignored: &Ignored) -> IgnoredReason {
    match ignored {
        Ignored::OtherVrid(_) => IgnoredReason::OtherVrid,
        Ignored::Version(_) => IgnoredReason::Version,
        Ignored::Auth => IgnoredReason::Auth,
        Ignored::Interval(_) => IgnoredReason::Interval,
        // Multicast loop is off on our sockets and XDP sees no egress, so
        // this is a loop on the segment or a host using our address: worth
        // seeing.
        Ignored::Own => IgnoredReason::OwnSource,
        Ignored::LowerPriority => IgnoredReason::LowerPriority,
    }
}

impl Engine {
    /// Runs until a Shutdown command (every instance resigns on the way
    /// out) or a RestartHold one.
    pub fn run(mut self) -> anyhow::Result<Stopped> {
        make_realtime();
        if self
            .instances
            .iter()
            .any(|i| i.config.fast_detect.is_some())
        {
            self.senders = Some(SenderPool::start(self.advert_senders)?);
        }
        let mut fds: Vec<RawFd> = self.readers.iter().map(|r| r.fd()).collect();
        fds.push(self.wake.as_raw_fd());
        fds.push(self.links.fd());
        let poller = Poller::new(&fds)?;
        let start = now();
        let mut next_publish = start;
        for group in &self.sync_groups {
            for &m in &group.members {
                self.instances[m].machine.join_sync_group();
            }
        }
        for i in 0..self.instances.len() {
            // What the trackers say now is known before the start: an
            // instance whose tracked link is down starts in FAULT.
            self.track_links_now(i, start);
            if self.instances[i].resume {
                self.instances[i].machine.resume_master(start);
            } else {
                self.instances[i].machine.start(start);
            }
            // An interface without a link at start: straight to FAULT.
            if !super::link::link_usable(&self.instances[i].config.interface).unwrap_or(true) {
                self.instances[i].link_up = false;
                self.instances[i].machine.interface_down(start);
            }
            self.carry_out(i, start);
        }
        // The first turn reads everything; later ones what epoll says.
        let (links_fd, wake_fd) = (self.links.fd(), self.wake.as_raw_fd());
        let mut ready = vec![links_fd, wake_fd];
        let mut stopping = false;
        loop {
            let t = now();
            if ready.contains(&links_fd) {
                self.kernel_changes(t);
            }
            self.drain_adverts(t);
            if ready.contains(&wake_fd) {
                drain_eventfd(wake_fd);
            }
            while let Ok(command) = self.commands.try_recv() {
                match command {
                    Command::Shutdown if !stopping => {
                        // Every instance resigns; the machines then keep
                        // their VIPs until the new master speaks (bounded).
                        stopping = true;
                        for i in 0..self.instances.len() {
                            self.instances[i].machine.shutdown(t);
                            self.carry_out(i, t);
                        }
                    }
                    Command::Shutdown => {}
                    Command::RestartHold { hold, reply } => {
                        let held = self.restart_hold(hold);
                        let _ = reply.send(Ok(format!(
                            "restarting in place; {} instance(s) kept as master, the peer waits up to {hold:?}",
                            held.len()
                        )));
                        return Ok(Stopped::Restart(held));
                    }
                    Command::Track {
                        instance,
                        tracker,
                        observation,
                    } => self.track(instance, tracker, observation, t),
                    Command::WitnessIsolation { instance, isolated } => {
                        self.witness_isolation(&instance, isolated, t)
                    }
                    Command::Switchover {
                        instance,
                        back: false,
                        reply,
                    } => {
                        let _ = reply.send(self.switchover(instance.as_deref(), t));
                    }
                    Command::Switchover {
                        instance,
                        back: true,
                        reply,
                    } => {
                        let _ = reply.send(self.switch_back(instance.as_deref(), t));
                    }
                }
            }
            let t = now();
            for i in 0..self.instances.len() {
                if self.instances[i]
                    .machine
                    .poll_timeout()
                    .is_some_and(|d| d <= t)
                {
                    self.instances[i].machine.handle_timeout(t);
                }
                self.carry_out(i, t);
                self.second_garp(i, t);
            }
            if stopping
                && self
                    .instances
                    .iter()
                    .all(|i| i.machine.poll_timeout().is_none())
            {
                self.leave_no_vip_behind();
                return Ok(Stopped::Shutdown);
            }
            let t = now();
            self.alive
                .store(t.0 / 1_000_000, std::sync::atomic::Ordering::Relaxed);
            if std::mem::take(&mut self.status_changed) || t >= next_publish {
                self.report_send_failures(t);
                if self.try_publish(t) {
                    next_publish = t + STATUS_PERIOD;
                } else {
                    self.status_changed = true;
                }
            }
            // At least one loop per HEARTBEAT, even with nothing to time
            // (FAULT, INIT): the watchdog hears the engine is alive.
            let heartbeat = now() + HEARTBEAT;
            let deadline = self
                .instances
                .iter()
                .flat_map(|i| [i.machine.poll_timeout(), i.second_garp_burst])
                .flatten()
                .fold(heartbeat, Timestamp::min);
            ready = poller.wait(deadline);
        }
    }

    fn drain_adverts(&mut self, t: Timestamp) {
        let mut events = Vec::new();
        for (index, reader) in self.readers.iter_mut().enumerate() {
            reader.drain(|event| events.push((index, event)));
        }
        for (reader, heard) in events {
            let Heard {
                source,
                destination,
                destination_mac,
                at,
                advert,
            } = heard;
            for i in 0..self.instances.len() {
                let instance = &mut self.instances[i];
                if instance.config.vrid != advert.vrid
                    || instance.primary.is_ipv4() != source.is_ipv4()
                {
                    continue;
                }
                let Some(link) = instance.link_of(reader) else {
                    continue;
                };
                let (our_mac, scope) = (link.mac, link.index);
                let locals = &mut self.local_addresses;
                if let Err(reason) = addressed_here(destination, destination_mac, our_mac, |a| {
                    locals.is_local(a, scope, t)
                }) {
                    instance.ignored.count(reason);
                    continue;
                }
                let Some(source) = instance.heard_as(reader, source, at) else {
                    continue;
                };
                // The XDP program already keeps rogue adverts out; this is
                // the second lock on the same door.
                if !instance.config.allowed_peers.is_empty()
                    && !instance.config.allowed_peers.contains(&source)
                {
                    instance.ignored.count(IgnoredReason::Rogue);
                    continue;
                }
                match instance.machine.handle_advert(t, source, &advert, at) {
                    Ok(()) => {
                        instance.adverts_received += 1;
                        if advert.priority == 0 {
                            instance.priority_zero_received += 1;
                        }
                    }
                    Err(why) => instance.ignored.count(ignored_reason(&why)),
                }
                self.carry_out(i, t);
            }
        }
    }

    /// The end of a shutdown: every machine has released its VIPs; any the
    /// engine still holds (a removal that failed) are tried once more.
    fn leave_no_vip_behind(&mut self) {
        for i in 0..self.instances.len() {
            if self.instances[i].holds_vips && !self.instances[i].config.is_address_owner() {
                tracing::warn!(instance = %self.instances[i].config.name, "VIPs still held at the end of the shutdown: removing them");
                self.remove_vips(i);
            }
        }
        self.publish(now());
    }
}
