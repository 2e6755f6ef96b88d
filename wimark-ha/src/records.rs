//! The plain records every layer passes around: what `status` shows, what
//! the journal keeps, what metrics are made of. They sit at the bottom of
//! the module graph so that the engine, the role switcher, the journal, the
//! control socket and metrics all use them without importing each other.
//!
//! Owns: the shapes and their JSON (byte-compatible with earlier releases).
//! Must not: hold behaviour beyond one-line summaries, or import anything
//! above `vrrp`, `recovery` and `monitor`'s records.

use std::{fmt, net::IpAddr, time::Duration};

use serde::{Deserialize, Serialize};

pub use crate::monitor::Snapshot;
pub use crate::vrrp::{Reason, State, WindowStatus};

/// Which container stack a server runs (`[roles]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stack {
    /// Not switched yet (the daemon just started).
    #[default]
    None,
    Master,
    Backup,
}

impl fmt::Display for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stack::None => "none",
            Stack::Master => "master",
            Stack::Backup => "backup",
        })
    }
}

/// Why an instance did not act on an advert it heard (never obeyed). The
/// names are the keys of `ignored` in `status --json` and the `reason`
/// label of `wimark_ha_advertisements_ignored_total`; alphabetical, as the
/// map they replace listed them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IgnoredReason {
    /// VRRPv2 authentication that is not ours (RFC 3768 §7.1).
    Auth,
    /// Sent to an IP address that is neither the VRRP group nor ours.
    ForeignAddress,
    /// In a frame for another host's unicast MAC (seen by XDP only because
    /// a switch flooded or mirrored it).
    ForeignMac,
    /// VRRPv2 with another advert interval (RFC 3768 §7.1), or a zero one.
    Interval,
    /// A lower-priority master while we preempt (we take over).
    LowerPriority,
    OtherVrid,
    /// Our own source address: a loop on the segment, or another host
    /// using our address.
    OwnSource,
    /// A source not on the instance's allow-list (the XDP program drops
    /// these first; this is the second lock).
    Rogue,
    Version,
}

impl IgnoredReason {
    pub const ALL: [IgnoredReason; 9] = [
        IgnoredReason::Auth,
        IgnoredReason::ForeignAddress,
        IgnoredReason::ForeignMac,
        IgnoredReason::Interval,
        IgnoredReason::LowerPriority,
        IgnoredReason::OtherVrid,
        IgnoredReason::OwnSource,
        IgnoredReason::Rogue,
        IgnoredReason::Version,
    ];

    pub fn name(self) -> &'static str {
        match self {
            IgnoredReason::Auth => "auth",
            IgnoredReason::ForeignAddress => "foreign_address",
            IgnoredReason::ForeignMac => "foreign_mac",
            IgnoredReason::Interval => "interval",
            IgnoredReason::LowerPriority => "lower_priority",
            IgnoredReason::OtherVrid => "other_vrid",
            IgnoredReason::OwnSource => "own_source",
            IgnoredReason::Rogue => "rogue",
            IgnoredReason::Version => "version",
        }
    }
}

/// Ignored adverts by reason. In JSON a map of the reasons counted at
/// least once (as earlier releases wrote it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IgnoredCounts([u64; IgnoredReason::ALL.len()]);

impl IgnoredCounts {
    pub fn count(&mut self, reason: IgnoredReason) {
        self.0[reason as usize] += 1;
    }

    pub fn get(&self, reason: IgnoredReason) -> u64 {
        self.0[reason as usize]
    }

    /// The reasons counted at least once, in order.
    pub fn iter(&self) -> impl Iterator<Item = (IgnoredReason, u64)> + '_ {
        IgnoredReason::ALL
            .into_iter()
            .map(|r| (r, self.get(r)))
            .filter(|(_, n)| *n > 0)
    }
}

impl FromIterator<(IgnoredReason, u64)> for IgnoredCounts {
    fn from_iter<I: IntoIterator<Item = (IgnoredReason, u64)>>(iter: I) -> Self {
        let mut counts = Self::default();
        for (reason, n) in iter {
            counts.0[reason as usize] += n;
        }
        counts
    }
}

impl Serialize for IgnoredCounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for IgnoredCounts {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A reason this build does not know (a daemon of another release
        // answering `status`) is left out, not an error.
        let map = std::collections::BTreeMap::<String, u64>::deserialize(deserializer)?;
        Ok(map
            .into_iter()
            .filter_map(|(name, n)| {
                IgnoredReason::ALL
                    .into_iter()
                    .find(|r| r.name() == name)
                    .map(|r| (r, n))
            })
            .collect())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub instances: Vec<InstanceStatus>,
    /// What the XDP monitor counted on each peer interface (as
    /// `wimark-ha stats --json` prints it): invalid and forged adverts are
    /// counted here, never obeyed.
    #[serde(default)]
    pub monitors: Vec<Snapshot>,
    /// The container role switch, when `[roles]` is configured.
    #[serde(default)]
    pub roles: Option<RolesStatus>,
    /// When this daemon process started (CLOCK_REALTIME ms); a restart in
    /// place keeps the PID, so this tells the new process from the old.
    #[serde(default)]
    pub started_unix_ms: u64,
    /// The AP table shared with the peer, when `[ap_recovery]` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ap_sync: Option<crate::recovery::sync::SyncStatus>,
    /// Per instance, when the APs came back after its latest takeover (by
    /// this process; `history` keeps them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aps_back: Vec<crate::recovery::LastApsBack>,
    /// The failover journal: a journal that cannot be written never stops a
    /// failover, it is reported here.
    #[serde(default)]
    pub journal: JournalStatus,
    /// The quorum witness, when `[witness]` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness: Option<WitnessStatus>,
}

/// The quorum witness as this node sees it (`status --json`'s top-level
/// `"witness"`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessStatus {
    pub endpoints: Vec<String>,
    pub key: String,
    /// This node's name in the key.
    pub node: String,
    /// etcd answered the latest request.
    pub reachable: bool,
    /// A lease this node can vouch for (renewed within its TTL).
    pub holds_lease: bool,
    /// The key is ours, under that lease: the master stack may run here.
    pub holds_key: bool,
    /// The TTL etcd granted (it may raise the configured one).
    #[serde(default)]
    pub lease_ttl_s: u64,
    /// Who held the key when last read, when not us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// A promotion waiting for the key, and since when (CLOCK_REALTIME ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since_unix_ms: Option<u64>,
    /// Since when the isolation rule keeps the master stack stopped here
    /// (lease not renewed, peer not answering), CLOCK_REALTIME ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolated_since_unix_ms: Option<u64>,
    /// The latest problem (unreachable, refused credentials, a foreign
    /// writer), until a request succeeds again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Whether the failover journal is being written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalStatus {
    pub path: std::path::PathBuf,
    /// Why entries are not being written (read-only, full or not a
    /// directory), while they are not; retried at every entry.
    pub degraded: Option<String>,
    /// Entries written by this process.
    pub written: u64,
    /// Entries lost by this process (not written).
    pub lost: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub version: u8,
    /// MASTER, BACKUP, INIT or FAULT.
    pub state: State,
    pub priority: u8,
    pub advert_interval_ms: u64,
    pub primary_address: IpAddr,
    /// The master as far as we know (ourselves when MASTER).
    pub master: Option<IpAddr>,
    /// The last advert heard (from the master, as BACKUP).
    pub last_advert_ms_ago: Option<u64>,
    /// The last advert we sent (as MASTER: "never" said nothing useful).
    #[serde(default)]
    pub last_advert_sent_ms_ago: Option<u64>,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    /// Resignations sent (shutdown, switchover) and heard from the peer.
    #[serde(default)]
    pub priority_zero_sent: u64,
    #[serde(default)]
    pub priority_zero_received: u64,
    /// Adverts not acted on, by reason (never obeyed).
    pub ignored: IgnoredCounts,
    pub virtual_ips: Vec<String>,
    pub holds_virtual_ips: bool,
    /// VIPs someone else removed from the interface while this node held
    /// them, put back (keepalived restores them too).
    #[serde(default)]
    pub vips_restored: u64,
    /// Why the instance is degraded (a VIP that could not be added...), if it is.
    pub fault: Option<String>,
    /// Latest transitions, oldest first (bounded).
    pub history: Vec<TransitionRecord>,
    /// The instance's heartbeat links beside `interface`, if any.
    #[serde(default)]
    pub heartbeats: Vec<HeartbeatStatus>,
    /// This node handed mastership over (`switchover`) and stays backup —
    /// no preemption, no fast-rule takeover — until `switchover --back`, a
    /// restart, or the new master's real death.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handed_over: bool,
    /// The fast rule's detection window in force and the master's gap
    /// statistics it rests on (with fast detection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detection: Option<WindowStatus>,
    /// Fast takeovers whose master spoke again: late, not dead.
    #[serde(default)]
    pub false_takeovers: u64,
    /// The CPUs the fast advert stream is sent from (one sender each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advert_sender_cpus: Vec<usize>,
    /// This node's own punctuality as a fast master, measured by its
    /// senders (absent before it first streamed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_gaps: Option<SendGapStatus>,
    /// The priority in force: `priority` plus the weights of the trackers
    /// in force (what our adverts carry). Absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_priority: Option<u8>,
    /// `[[instance.track]]`, in config order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trackers: Vec<TrackerStatus>,
}

/// What a tracker watches (`[[instance.track]]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrackerKind {
    Interface,
    Script,
    File,
    Container,
    Process,
}

impl fmt::Display for TrackerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrackerKind::Interface => "interface",
            TrackerKind::Script => "script",
            TrackerKind::File => "file",
            TrackerKind::Container => "container",
            TrackerKind::Process => "process",
        })
    }
}

/// A tracker's verdict after its rise/fall counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Failed,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Healthy => "healthy",
            Health::Failed => "FAILED",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerStatus {
    pub name: String,
    pub kind: TrackerKind,
    /// The interface, the script's argv, or the file.
    pub target: String,
    pub health: Health,
    /// As configured (0: FAULT while failed).
    pub weight: i32,
    /// What it adds to the priority now.
    pub weight_in_force: i32,
    /// It holds the instance in FAULT now.
    pub fault: bool,
    /// The latest observation: "exit status 1", "link down", "value 3".
    pub detail: String,
    /// Why it cannot observe now (a container tracker whose Docker does not
    /// answer): its health is the last known, and nothing moves on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
}

/// Whether this node's master stack should be running, as the role switch
/// (or, without `[roles]`, the instances' states) says: what a container
/// tracker is judged by.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StackView {
    /// `[roles]` is configured: `master_stack` is the word.
    pub roles: bool,
    /// The last switch brought the master stack up (done, or failed: a
    /// start that never got healthy is a dead service too).
    pub master_stack: bool,
    /// The instances in MASTER (what counts without `[roles]`).
    pub masters: Vec<String>,
}

impl StackView {
    pub fn master_here(&self, instance: &str) -> bool {
        if self.roles {
            self.master_stack
        } else {
            self.masters.iter().any(|m| m == instance)
        }
    }
}

/// The gaps between consecutive turns of this node's fast advert stream
/// (any sender), since the daemon started: a backup's false takeover with
/// `longest_us` near its silence was this node's stall, not the path's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendGapStatus {
    pub gaps: u64,
    /// Gaps longer than two fast intervals.
    pub late: u64,
    pub longest_us: u64,
}

impl SendGapStatus {
    /// "longest gap between turns 8.94 ms, 34 of 64304 gaps over two
    /// intervals", as `status` and the soak rows print it.
    pub fn summary(&self) -> String {
        format!(
            "longest gap between turns {:.2} ms, {} of {} gaps over two intervals",
            self.longest_us as f64 / 1e3,
            self.late,
            self.gaps
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatStatus {
    pub interface: String,
    pub peer: IpAddr,
    pub link_up: bool,
    /// The peer's adverts heard on this link.
    pub adverts_received: u64,
    pub last_advert_ms_ago: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionRecord {
    pub at_unix_ms: u64,
    pub from: State,
    pub to: State,
    pub reason: Reason,
    /// Takeovers: silence from the last advert heard to the decision.
    #[serde(default, rename = "silence_us", with = "micros")]
    pub silence: Option<Duration>,
    /// From the decision to the VIPs being on the interface.
    #[serde(default, rename = "vip_added_us", with = "micros")]
    pub vip_added: Option<Duration>,
    /// From the decision to the first gratuitous ARP/NA on the wire.
    #[serde(default, rename = "garp_sent_us", with = "micros")]
    pub garp_sent: Option<Duration>,
    /// The trackers behind it, when they are: "track script chk_mongo
    /// failed 3 times".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

impl TransitionRecord {
    /// The reason, with the trackers behind it when they are.
    pub fn why(&self) -> String {
        match &self.cause {
            Some(cause) => format!("{}: {cause}", self.reason),
            None => self.reason.to_string(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RolesStatus {
    /// The stack this server last switched to: "master", "backup" or "none".
    pub stack: Stack,
    /// Why the last switch did not complete (dockerd down, a container that
    /// would not start, a blocking hook), if it did not.
    pub degraded: Option<String>,
    pub history: Vec<SwitchRecord>,
    /// The role-bound programs (`[[roles.master_process]]`).
    #[serde(default)]
    pub processes: Vec<ProcessStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStatus {
    pub argv: String,
    pub running: bool,
    pub pid: Option<u32>,
    /// Times it died while it should have run, and was started again.
    pub restarts: u32,
    pub last_exit: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SwitchRecord {
    pub at_unix_ms: u64,
    pub to: Stack,
    #[serde(default, rename = "hooks_ms", with = "millis")]
    pub hooks: Duration,
    #[serde(default, rename = "stop_ms", with = "millis")]
    pub stop: Duration,
    #[serde(default, rename = "start_ms", with = "millis")]
    pub start: Duration,
    #[serde(default, rename = "ready_ms", with = "millis")]
    pub ready: Duration,
    #[serde(default, rename = "total_ms", with = "millis")]
    pub total: Duration,
    /// Containers that failed, hooks that failed: reported, never dropped.
    pub problems: Vec<String>,
    /// A demotion cancelled by a flap back to MASTER within demote_delay.
    pub cancelled: bool,
    /// Not carried out (fencing or a blocking hook failed): the containers
    /// are as they were; `problems` says why.
    #[serde(default)]
    pub held_back: bool,
    /// Time spent waiting for the witness key before a promotion.
    #[serde(default, rename = "witness_ms", with = "millis", skip_serializing_if = "Duration::is_zero")]
    pub witness: Duration,
}

impl SwitchRecord {
    /// One line for `status` and `history`: where to, the timings, problems.
    pub fn summary(&self) -> String {
        if self.cancelled {
            return format!("to {}: cancelled by a flap", self.to);
        }
        if self.held_back {
            return format!(
                "to {}: held back, containers left as they were: {}",
                self.to,
                self.problems.join("; ")
            );
        }
        format!(
            "to {}: {}hooks {:.0} ms, stop {:.0} ms, start {:.0} ms, ready {:.0} ms, total {:.0} ms{}",
            self.to,
            if self.witness.is_zero() {
                String::new()
            } else {
                format!("witness key after {:.0} ms, ", millis::of(self.witness))
            },
            millis::of(self.hooks),
            millis::of(self.stop),
            millis::of(self.start),
            millis::of(self.ready),
            millis::of(self.total),
            if self.problems.is_empty() {
                String::new()
            } else {
                format!("; problems: {}", self.problems.join("; "))
            }
        )
    }
}

// Durations in JSON as earlier releases wrote them: transitions in whole
// microseconds (clock::micros), switches in fractional milliseconds. In Rust
// they are `Duration`s alike.
use crate::clock::micros;

pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Fractional milliseconds (to the nanosecond).
    pub fn of(d: Duration) -> f64 {
        d.as_nanos() as f64 / 1e6
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(of(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        Ok(Duration::from_nanos((ms * 1e6).round().max(0.0) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_records_write_the_json_earlier_releases_wrote_and_read_it_back() {
        // A journal line's record as the release before the typed records
        // wrote it (strings for states and reasons).
        let written = r#"{"at_unix_ms":1,"from":"BACKUP","to":"MASTER","reason":"master down (fast detection)","silence_us":3000,"vip_added_us":50,"garp_sent_us":null}"#;
        let record: TransitionRecord = serde_json::from_str(written).expect("reads");
        assert_eq!(
            (record.from, record.to, record.reason),
            (State::Backup, State::Master, Reason::FastDetect)
        );
        assert_eq!(serde_json::to_string(&record).expect("json"), written);
        let ignored: IgnoredCounts = [(IgnoredReason::Rogue, 1), (IgnoredReason::Auth, 5)]
            .into_iter()
            .collect();
        assert_eq!(
            serde_json::to_string(&ignored).expect("json"),
            r#"{"auth":5,"rogue":1}"#
        );
        assert_eq!(
            serde_json::from_str::<IgnoredCounts>(r#"{"auth":5,"own":2,"rogue":1}"#)
                .expect("reads, leaving out a reason it does not know"),
            ignored
        );
        let switch: SwitchRecord =
            serde_json::from_str(r#"{"at_unix_ms":2,"to":"master","hooks_ms":0.5,"stop_ms":1.0,"start_ms":2.0,"ready_ms":3.0,"total_ms":6.5,"problems":[],"cancelled":false}"#)
                .expect("reads an entry without held_back");
        assert_eq!(switch.to, Stack::Master);
        assert_eq!(
            (switch.hooks, switch.total),
            (Duration::from_micros(500), Duration::from_micros(6500))
        );
        assert_eq!(record.silence, Some(Duration::from_millis(3)));
        // A field left out reads as absent, as a plain Option did.
        let sparse: TransitionRecord = serde_json::from_str(
            r#"{"at_unix_ms":1,"from":"INIT","to":"BACKUP","reason":"startup"}"#,
        )
        .expect("reads without timings");
        assert_eq!((sparse.silence, sparse.garp_sent), (None, None));
        // Written back in the units and digits they were read in.
        let again = serde_json::to_string(&switch).expect("json");
        assert!(
            again.contains(
                r#""hooks_ms":0.5,"stop_ms":1.0,"start_ms":2.0,"ready_ms":3.0,"total_ms":6.5"#
            ),
            "{again}"
        );
        assert_eq!(
            serde_json::to_string(&Stack::None).expect("json"),
            r#""none""#
        );
    }

    #[test]
    fn every_state_and_reason_has_one_name_in_json_and_logs() {
        for state in [
            State::Initialize,
            State::Backup,
            State::Master,
            State::Fault,
        ] {
            assert_eq!(
                serde_json::to_string(&state).expect("json"),
                format!("\"{state}\"")
            );
        }
        for reason in [
            Reason::Startup,
            Reason::AddressOwner,
            Reason::MasterDown,
            Reason::FastDetect,
            Reason::PeerResigned,
            Reason::PreemptedByPeer,
            Reason::Shutdown,
            Reason::Switchover,
            Reason::InterfaceDown,
            Reason::InterfaceUp,
            Reason::TrackerFault,
            Reason::TrackerRecovered,
            Reason::Preempting,
            Reason::RestartHold,
            Reason::SyncGroup,
            Reason::WitnessIsolated,
            Reason::WitnessRegained,
        ] {
            let json = serde_json::to_string(&reason).expect("json");
            assert_eq!(json, format!("\"{reason}\""));
            assert_eq!(
                serde_json::from_str::<Reason>(&json).expect("reads"),
                reason
            );
        }
        for reason in IgnoredReason::ALL {
            assert_eq!(
                serde_json::to_string(&reason).expect("json"),
                format!("\"{}\"", reason.name())
            );
        }
    }
}
