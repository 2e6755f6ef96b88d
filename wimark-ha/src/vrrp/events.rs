//! What goes into and comes out of the state machine: the clock it runs on,
//! its states and reasons, its parameters, the actions it decides and the
//! reasons it ignores an advert. Plain data, shared by the machine, the
//! engine that executes it and the records that report it.
//!
//! Owns: those types and their names in JSON and logs. Must not: hold any
//! rule (the machine does).

use std::{net::IpAddr, time::Duration};

use super::packet::{Advert, Auth, Version};

/// CLOCK_MONOTONIC in nanoseconds: the clock of the XDP program's advert
/// timestamps, so kernel receive times and deadlines compare directly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.as_nanos() as u64))
    }
}

/// In JSON (status, journal) and logs: INIT, BACKUP, MASTER, FAULT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    #[serde(rename = "INIT")]
    Initialize,
    Backup,
    Master,
    /// The interface is down or a tracker of weight 0 fails: no adverts, no
    /// VIPs (keepalived's FAULT).
    Fault,
}

/// wimark-ha's millisecond detection. The master also sends an advert every
/// `interval`; a backup that *observes* its master sending that fast declares
/// it down after a window of silence: `multiplier` intervals, or with
/// [`Multiplier::Auto`] the window its gap statistics give (see
/// [`window`](super::window), which sits above this module). A master sending at RFC rates (keepalived) is
/// never judged by this rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastDetect {
    pub interval: Duration,
    pub multiplier: Multiplier,
}

/// `fast_detect.multiplier`: a number of intervals, or learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Multiplier {
    Fixed(u32),
    Auto,
}

impl std::fmt::Display for Multiplier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Multiplier::Fixed(n) => write!(f, "x {n}"),
            Multiplier::Auto => f.write_str("x auto"),
        }
    }
}

/// The configuration the state machine needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params {
    pub version: Version,
    pub vrid: u8,
    /// 1..=255; 255 is the address owner.
    pub priority: u8,
    pub advert_interval: Duration,
    pub auth: Auth,
    pub virtual_ips: Vec<IpAddr>,
    pub preempt: bool,
    /// Our primary address on the interface: the tie-break (RFC 5798 §6.4.3).
    pub primary_address: IpAddr,
    pub fast_detect: Option<FastDetect>,
    /// The config names exactly one peer (`peers` / `unicast_peers`): no
    /// other backup can compete, so the fast rule needs no priority skew.
    pub sole_peer: bool,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Initialize => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a transition happened. In JSON (status, journal) and logs as the
/// phrase of [`Reason::phrase`], as earlier releases wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Reason {
    #[serde(rename = "startup")]
    Startup,
    /// Priority 255: we own the addresses.
    #[serde(rename = "address owner")]
    AddressOwner,
    /// Master_Down_Timer fired: the master went silent.
    #[serde(rename = "master down (RFC timer)")]
    MasterDown,
    /// The fast rule fired: `multiplier` fast intervals of silence.
    #[serde(rename = "master down (fast detection)")]
    FastDetect,
    /// The master resigned (priority 0) and our skew time passed.
    #[serde(rename = "peer resigned (priority 0)")]
    PeerResigned,
    /// A peer with a higher priority (or equal priority, higher address).
    #[serde(rename = "preempted by a higher-priority peer")]
    PreemptedByPeer,
    #[serde(rename = "shutdown")]
    Shutdown,
    /// A planned hand-over (`wimark-ha switchover`).
    #[serde(rename = "planned switchover")]
    Switchover,
    /// The interface lost its link.
    #[serde(rename = "interface down")]
    InterfaceDown,
    /// The interface has its link back.
    #[serde(rename = "interface up")]
    InterfaceUp,
    /// A tracker of weight 0 failed (keepalived's FAULT for `track_*`).
    #[serde(rename = "tracker failed")]
    TrackerFault,
    /// No tracker holds the instance in FAULT any more.
    #[serde(rename = "trackers healthy")]
    TrackerRecovered,
    /// The master we followed advertised a priority below ours (its
    /// trackers lowered it, or ours healed) and we preempt.
    #[serde(rename = "preempting a lower-priority master")]
    Preempting,
    /// Restarted in place while the peer was told to wait (`restart_hold`):
    /// mastership resumed without a hand-over.
    #[serde(rename = "resumed after a restart in place")]
    RestartHold,
    /// A member of the instance's sync group moved, and it follows
    /// (keepalived's `vrrp_sync_group`): into BACKUP or FAULT with it, out
    /// of FAULT with it.
    #[serde(rename = "sync group")]
    SyncGroup,
    /// The witness's isolation rule (`on_isolation = "release_vip"`): no
    /// lease renewal and no answer from the peer; the VIPs are given up.
    #[serde(rename = "isolated from the peer and the witness")]
    WitnessIsolated,
    /// The isolation is over: the witness key is ours again, or the peer
    /// answers.
    #[serde(rename = "isolation over")]
    WitnessRegained,
    /// A VIP this master must hold could not be added to the interface.
    #[serde(rename = "VIP could not be added")]
    VipNotAdded,
    /// The FAULT of a VIP that could not be added has been held long
    /// enough: start over.
    #[serde(rename = "VIP retry")]
    VipRetry,
    /// The address the adverts are sent from left the interface.
    #[serde(rename = "advert source address gone")]
    SourceAddressGone,
    /// It is back.
    #[serde(rename = "advert source address back")]
    SourceAddressBack,
}

impl Reason {
    pub fn phrase(self) -> &'static str {
        match self {
            Reason::Startup => "startup",
            Reason::AddressOwner => "address owner",
            Reason::MasterDown => "master down (RFC timer)",
            Reason::FastDetect => "master down (fast detection)",
            Reason::PeerResigned => "peer resigned (priority 0)",
            Reason::PreemptedByPeer => "preempted by a higher-priority peer",
            Reason::Shutdown => "shutdown",
            Reason::Switchover => "planned switchover",
            Reason::InterfaceDown => "interface down",
            Reason::InterfaceUp => "interface up",
            Reason::TrackerFault => "tracker failed",
            Reason::TrackerRecovered => "trackers healthy",
            Reason::Preempting => "preempting a lower-priority master",
            Reason::RestartHold => "resumed after a restart in place",
            Reason::SyncGroup => "sync group",
            Reason::WitnessIsolated => "isolated from the peer and the witness",
            Reason::WitnessRegained => "isolation over",
            Reason::VipNotAdded => "VIP could not be added",
            Reason::VipRetry => "VIP retry",
            Reason::SourceAddressGone => "advert source address gone",
            Reason::SourceAddressBack => "advert source address back",
        }
    }

    /// A takeover because the peer went silent (not handed over).
    pub fn peer_lost(self) -> bool {
        matches!(self, Reason::MasterDown | Reason::FastDetect)
    }

    /// BACKUP because this node handed mastership over on purpose (not
    /// preempted, not a flap): its master stack may stop at once.
    pub fn handed_over(self) -> bool {
        matches!(self, Reason::Switchover)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.phrase())
    }
}

/// The fast advert stream of a master, as a standing order: the runtime
/// sends it from several CPUs at once (one CPU's stall then delays none of
/// the adverts the backup times), which one thread's timer could not do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Heartbeat {
    /// Send `advert` every `every` (all senders together) until `until`
    /// unless renewed: a machine that stops renewing (a hung engine) falls
    /// silent by itself, so the backup takes over.
    Send {
        advert: Advert,
        every: Duration,
        until: Timestamp,
    },
    /// Stop at once: when this returns, no sender sends the old advert
    /// again (a resignation must be the last advert heard).
    Stop,
}

/// What the runtime must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this advert, complete (priority 0 = resignation): the runtime
    /// only adds the addresses of each link it goes out on.
    SendAdvert(Advert),
    /// Start, renew or stop the fast advert stream.
    Heartbeat(Heartbeat),
    AddVirtualIps,
    RemoveVirtualIps,
    /// A VIP we must hold left the interface (someone else removed it):
    /// add it back and announce it again.
    RestoreVirtualIp(IpAddr),
    /// A VIP we must not hold appeared on the interface: remove it.
    RemoveStrayVirtualIp(IpAddr),
    /// Gratuitous ARP / unsolicited NA for every VIP (the runtime repeats
    /// them as configured).
    AnnounceVirtualIps,
    Transition {
        from: State,
        to: State,
        reason: Reason,
        /// For takeovers: the time from the last advert heard to the decision.
        silence: Option<Duration>,
    },
    /// A fast takeover was false: the master we declared down was heard
    /// again (its kernel-stamped advert) within Master_Down_Interval, so it
    /// was late, not dead. `gap`: how long it was silent; `window`: the
    /// detection window (with its priority skew) it outlasted.
    FalseTakeover {
        peer: IpAddr,
        gap: Duration,
        window: Duration,
    },
}

/// Why an advert was not acted on. Counted by the runtime; never obeyed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    #[error("VRID {0} is not ours")]
    OtherVrid(u8),
    #[error("VRRP version {0} does not match ours")]
    Version(u8),
    #[error("authentication does not match (RFC 3768 §7.1)")]
    Auth,
    #[error("advert interval {0:?} differs from ours (RFC 3768 §7.1)")]
    Interval(Duration),
    #[error("our own advert")]
    Own,
    #[error("lower priority than ours while we preempt")]
    LowerPriority,
}
