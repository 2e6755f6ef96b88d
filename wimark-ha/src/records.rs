//! The plain records every layer passes around: what `status` shows, what
//! the journal keeps, what metrics are made of. They sit at the bottom of
//! the module graph so that the engine, the role switcher, the journal, the
//! control socket and metrics all use them without importing each other.
//!
//! Owns: the shapes and their JSON (byte-compatible with earlier releases).
//! Must not: hold behaviour beyond one-line summaries, or import anything
//! above `vrrp`, `recovery` and `monitor`'s records.

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub instances: Vec<InstanceStatus>,
    /// What the XDP monitor counted on each peer interface (as
    /// `wimark-ha stats --json` prints it): invalid and forged adverts are
    /// counted here, never obeyed.
    #[serde(default)]
    pub monitors: Vec<serde_json::Value>,
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
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub version: u8,
    /// MASTER, BACKUP, INIT or FAULT.
    pub state: String,
    pub priority: u8,
    pub advert_interval_ms: u64,
    pub primary_address: IpAddr,
    /// The master as far as we know (ourselves when MASTER).
    pub master: Option<IpAddr>,
    pub last_advert_ms_ago: Option<u64>,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    /// Resignations sent (shutdown, switchover) and heard from the peer.
    #[serde(default)]
    pub priority_zero_sent: u64,
    #[serde(default)]
    pub priority_zero_received: u64,
    /// Adverts not acted on, by reason (never obeyed).
    pub ignored: BTreeMap<String, u64>,
    pub virtual_ips: Vec<String>,
    pub holds_virtual_ips: bool,
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
    pub from: String,
    pub to: String,
    pub reason: String,
    /// Takeovers: silence from the last advert heard to the decision.
    pub silence_us: Option<u64>,
    /// From the decision to the VIPs being on the interface.
    pub vip_added_us: Option<u64>,
    /// From the decision to the first gratuitous ARP/NA on the wire.
    pub garp_sent_us: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RolesStatus {
    /// The stack this server last switched to: "master", "backup" or "none".
    pub stack: String,
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
    pub to: String,
    pub hooks_ms: f64,
    pub stop_ms: f64,
    pub start_ms: f64,
    pub ready_ms: f64,
    pub total_ms: f64,
    /// Containers that failed, hooks that failed: reported, never dropped.
    pub problems: Vec<String>,
    /// A demotion cancelled by a flap back to MASTER within demote_delay.
    pub cancelled: bool,
    /// Not carried out (fencing or a blocking hook failed): the containers
    /// are as they were; `problems` says why.
    #[serde(default)]
    pub held_back: bool,
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
            "to {}: hooks {:.0} ms, stop {:.0} ms, start {:.0} ms, ready {:.0} ms, total {:.0} ms{}",
            self.to,
            self.hooks_ms,
            self.stop_ms,
            self.start_ms,
            self.ready_ms,
            self.total_ms,
            if self.problems.is_empty() {
                String::new()
            } else {
                format!("; problems: {}", self.problems.join("; "))
            }
        )
    }
}
