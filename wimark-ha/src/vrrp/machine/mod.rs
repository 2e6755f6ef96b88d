//! The VRRP state machine of one virtual router, sans-IO.
//!
//! Events and the current time go in ([`Instance::start`],
//! [`Instance::handle_advert`], [`Instance::handle_timeout`],
//! [`Instance::shutdown`]); actions come out ([`Instance::poll_action`]) and
//! the next deadline is [`Instance::poll_timeout`]. No sockets, no clocks, no
//! tokio: a timer firing is an input like any other, so every transition is
//! tested by replaying recorded event sequences.
//!
//! Implements RFC 5798 §6.4 (VRRPv3) and RFC 3768 §6.4 (VRRPv2) with the
//! clarifications of RFC 9568, plus wimark-ha's fast detection (see
//! [`FastDetect`](super::FastDetect)). Must not: touch the network or read a clock.

use std::{collections::VecDeque, net::IpAddr, time::Duration};

mod adverts;
mod sync;
use sync::SyncMembership;
mod timers;
mod vips;
pub use vips::VIP_FAULT_HOLD;

use super::{
    events::{Action, Heartbeat, Ignored, Params, Reason, State, Timestamp},
    packet::{Advert, Version},
    window::{GapLearner, WindowStatus},
};

/// One VRRP virtual router.
#[derive(Debug)]
pub struct Instance {
    params: Params,
    state: State,
    /// The priority in force: the configured one plus the weights of the
    /// failing trackers (keepalived's effective priority), 1..=254 unless
    /// we own the addresses. It goes into our adverts and orders the skews.
    priority: u8,
    /// The interface has no link (FAULT until it has).
    link_down: bool,
    /// A tracker of weight 0 fails (FAULT until none does).
    tracker_fault: bool,
    /// The witness's isolation rule gave the VIPs up (`on_isolation =
    /// "release_vip"`): FAULT until it says otherwise.
    witness_isolated: bool,
    /// A VIP could not be added: FAULT until then (see `vips.rs`).
    vip_fault_until: Option<Timestamp>,
    /// The address our adverts are sent from left the interface: FAULT
    /// until it is back (see `vips.rs`).
    source_address_gone: bool,
    /// The instance's sync group, when it has one (see `sync.rs`).
    sync: Option<SyncMembership>,
    /// The master we follow sent an advert below our priority and we
    /// preempt (RFC 5798 §6.4.2 "Discard the ADVERTISEMENT"): our takeover,
    /// when its deadline passes, is a preemption, not a master lost.
    preempting: bool,
    /// Master_Adver_Interval: the master's advertised interval (v3 learns it).
    master_adver_interval: Duration,
    /// Adver_Timer (Master).
    adver_deadline: Option<Timestamp>,
    /// Master_Down_Timer (Backup).
    master_down_deadline: Option<Timestamp>,
    /// The fast rule's deadline, only while the master is seen sending fast.
    fast_down_deadline: Option<Timestamp>,
    /// Set when a deadline fired late and the peer got one more interval.
    stall_grace_used: bool,
    /// Whether the master-down timer currently runs on skew time only
    /// (the master resigned).
    resigned: bool,
    /// We handed mastership over on purpose (a planned switchover, a
    /// maintenance state): no preemption and no fast-rule takeover until
    /// the operator ends it ([`reclaim`](Self::reclaim)) or we become
    /// master because the new master really died (Master_Down_Interval).
    yielded: bool,
    /// After a switchover or a shutdown we keep answering on the VIPs
    /// until the new master's first advert, so no client packet falls in
    /// between.
    release_vips_on_new_master: bool,
    /// Shutdown's bound on that wait: the VIPs go then, new master or not.
    vip_release_deadline: Option<Timestamp>,
    last_advert_at: Option<Timestamp>,
    previous_advert_at: Option<Timestamp>,
    /// The first advert of the current master's stream (the fast rule's
    /// warm-up counts from it).
    stream_since: Option<Timestamp>,
    /// The current master's stream has shown two adverts at most two fast
    /// intervals apart: it sends fast (the fast rule may arm, a resignation
    /// gets the fast skew) until the stream ends or slows down on purpose.
    stream_fast: bool,
    /// The fast rule's window and the gap statistics behind it.
    learner: Option<GapLearner>,
    /// Our last fast takeover, until Master_Down_Interval has passed: if
    /// the master we declared down speaks again meanwhile, it was false.
    fast_takeover: Option<FastTakeover>,
    /// The fast advert stream runs ([`Heartbeat::Send`] given, not stopped).
    streaming: bool,
    master: Option<IpAddr>,
    actions: VecDeque<Action>,
}

#[derive(Clone, Copy, Debug)]
struct FastTakeover {
    from: IpAddr,
    last_heard: Timestamp,
    /// The silence that declared it down (window and skew).
    window: Duration,
    until: Timestamp,
}

impl Instance {
    pub fn new(params: Params) -> Self {
        let master_adver_interval = params.advert_interval;
        Self {
            state: State::Initialize,
            priority: params.priority,
            link_down: false,
            tracker_fault: false,
            witness_isolated: false,
            vip_fault_until: None,
            source_address_gone: false,
            sync: None,
            preempting: false,
            master_adver_interval,
            adver_deadline: None,
            master_down_deadline: None,
            fast_down_deadline: None,
            stall_grace_used: false,
            resigned: false,
            yielded: false,
            release_vips_on_new_master: false,
            vip_release_deadline: None,
            last_advert_at: None,
            previous_advert_at: None,
            stream_since: None,
            stream_fast: false,
            learner: params.fast_detect.map(|fast| {
                GapLearner::new(fast.interval, fast.multiplier, 3 * params.advert_interval)
            }),
            fast_takeover: None,
            streaming: false,
            master: None,
            actions: VecDeque::new(),
            params,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The current master's address, as far as we know (ourselves when master).
    pub fn master(&self) -> Option<IpAddr> {
        match self.state {
            State::Master => Some(self.params.primary_address),
            _ => self.master,
        }
    }

    pub fn last_advert_at(&self) -> Option<Timestamp> {
        self.last_advert_at
    }

    pub fn master_adver_interval(&self) -> Duration {
        self.master_adver_interval
    }

    /// The fast rule's window in force and the gap statistics it rests on
    /// (`None` without fast detection).
    pub fn detection(&self) -> Option<WindowStatus> {
        self.learner
            .as_ref()
            .map(|l| l.status(self.fast_down_deadline.is_some()))
    }

    // ===== timer arithmetic =====

    /// RFC 5798 §6.4.1 (Initialize): "If a Startup event is received".
    pub fn start(&mut self, now: Timestamp) {
        if self.state != State::Initialize {
            return;
        }
        self.begin(now, Reason::Startup);
    }

    /// Leaving Initialize (or FAULT): the address owner goes straight to
    /// Master; everyone else waits one Master_Down_Interval as Backup.
    fn begin(&mut self, now: Timestamp, reason: Reason) {
        if let Some(reason) = self.own_fault_cause() {
            // Known before the start: straight to FAULT.
            self.enter(State::Fault, reason, None);
            return;
        }
        if self.params.priority == 255 {
            let reason = if reason == Reason::Startup {
                Reason::AddressOwner
            } else {
                reason
            };
            self.become_master(now, reason, None);
        } else {
            self.master_adver_interval = self.params.advert_interval;
            self.enter(State::Backup, reason, None);
            self.master_down_deadline = Some(now + self.master_down_interval());
        }
    }

    /// wimark-ha's restart hold, instead of [`start`](Self::start): this
    /// node was master a moment ago, its VIPs are still on the interface,
    /// and its last advert (see [`hold_interval`]) told the peer to wait
    /// for it. Resume as master at once: VIPs (already there), gratuitous
    /// ARP, an advert at the normal interval that the peer re-learns. A
    /// peer that took over meanwhile is settled by the usual preemption
    /// rules (RFC 5798 §6.4.3) on the first advert heard.
    pub fn resume_master(&mut self, now: Timestamp) {
        if self.state != State::Initialize {
            return;
        }
        self.become_master(now, Reason::RestartHold, None);
    }

    /// RFC 5798 §6.4.2 / §6.4.3: "If a Shutdown event is received". A
    /// master resigns (priority 0, so the backup takes over after its skew
    /// time only) but keeps its VIPs until the new master's first advert,
    /// at most [`SHUTDOWN_VIP_HOLD`]: the clients the new master's
    /// gratuitous ARP moves find someone answering all along. The runtime
    /// keeps feeding adverts and timeouts until [`poll_timeout`] is `None`.
    ///
    /// [`poll_timeout`]: Self::poll_timeout
    pub fn shutdown(&mut self, now: Timestamp) {
        match self.state {
            State::Initialize => return,
            State::Fault => {}
            State::Backup => {
                if self.release_vips_on_new_master {
                    self.release_vips();
                }
            }
            State::Master => {
                self.stop_stream();
                self.actions.push_back(Action::SendAdvert(self.advert(0)));
            }
        }
        let was_master = self.state == State::Master;
        self.clear_timers();
        self.enter(State::Initialize, Reason::Shutdown, None);
        if was_master {
            self.release_vips_on_new_master = true;
            self.vip_release_deadline = Some(now + SHUTDOWN_VIP_HOLD);
        }
    }

    /// wimark-ha's restart hold (`wimark-ha restart`): a master's last
    /// advert carries an interval that makes the backup wait `hold` for it
    /// (RFC 5798 §6.4.2: a backup learns Master_Adver_Interval from the
    /// advert; see [`hold_interval`]), then it sends nothing more and keeps
    /// its VIPs for the next process, which calls
    /// [`resume_master`](Self::resume_master). Returns whether this
    /// instance was master (and is now held).
    pub fn restart_hold(&mut self, _now: Timestamp, hold: Duration) -> bool {
        if self.state != State::Master {
            return false;
        }
        self.stop_stream();
        let mut advert = self.advert(self.priority);
        advert.interval = hold_interval(hold);
        self.actions.push_back(Action::SendAdvert(advert));
        self.adver_deadline = None;
        true
    }

    /// The interface lost its link: whatever we were, we can neither hear
    /// nor be heard, so give the VIPs up and stop advertising (FAULT).
    pub fn interface_down(&mut self, _now: Timestamp) {
        self.link_down = true;
        self.enter_fault(Reason::InterfaceDown);
    }

    /// The link is back: start over as at startup (RFC 5798 §6.4.1), unless
    /// a tracker still holds us in FAULT.
    pub fn interface_up(&mut self, now: Timestamp) {
        self.link_down = false;
        self.leave_fault(now, Reason::InterfaceUp);
    }

    /// The trackers' verdict (keepalived's `track_*`): `priority` is the
    /// configured one plus the weights of the failing trackers, `fault`
    /// whether one of weight 0 fails. A master's new priority goes out at
    /// once (its stream too), so a preempting peer takes over without
    /// waiting for the next Adver_Timer; a fault is FAULT as a link down is.
    pub fn set_tracking(&mut self, now: Timestamp, priority: u8, fault: bool) {
        // The address owner's priority is its ownership (RFC 5798 §5.2.4):
        // config refuses weights on it, and this keeps it so.
        let priority = if self.params.priority == 255 {
            255
        } else {
            priority.clamp(1, 254)
        };
        if priority != self.priority {
            self.priority = priority;
            if self.state == State::Master {
                self.actions
                    .push_back(Action::SendAdvert(self.advert(self.priority)));
                if let Some(every) = self.fast_stream_interval().filter(|_| self.streaming) {
                    self.actions.push_back(self.heartbeat(now, every));
                }
            }
        }
        if fault != self.tracker_fault {
            self.tracker_fault = fault;
            if fault {
                self.enter_fault(Reason::TrackerFault);
            } else {
                self.leave_fault(now, Reason::TrackerRecovered);
            }
        }
    }

    /// wimark-ha's witness, `on_isolation = "release_vip"`: this node can
    /// neither renew its witness lease nor reach its peer, so it is the
    /// cut-off side and the peer holds (or soon takes) the VIPs. It gives
    /// them up and stays in FAULT — deaf to adverts, as with a link down —
    /// until the switcher ends the isolation (the witness key is ours again,
    /// or the peer answers); then it starts over as at startup (RFC 5798
    /// §6.4.1), so a master heard meanwhile keeps its mastership.
    pub fn set_witness_isolated(&mut self, now: Timestamp, isolated: bool) {
        if isolated == self.witness_isolated {
            return;
        }
        self.witness_isolated = isolated;
        if isolated {
            self.enter_fault(Reason::WitnessIsolated);
        } else {
            self.leave_fault(now, Reason::WitnessRegained);
        }
    }

    /// The priority in force (see [`set_tracking`](Self::set_tracking)).
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// What holds this instance in FAULT of its own accord (not its sync
    /// group's), the first cause by precedence.
    fn own_fault_cause(&self) -> Option<Reason> {
        if self.link_down {
            Some(Reason::InterfaceDown)
        } else if self.tracker_fault {
            Some(Reason::TrackerFault)
        } else if self.witness_isolated {
            Some(Reason::WitnessIsolated)
        } else if self.vip_fault_until.is_some() {
            Some(Reason::VipNotAdded)
        } else if self.source_address_gone {
            Some(Reason::SourceAddressGone)
        } else {
            None
        }
    }

    /// Into FAULT from Backup or Master (a machine shut down stays so).
    fn enter_fault(&mut self, reason: Reason) {
        if matches!(self.state, State::Fault | State::Initialize) {
            return;
        }
        self.stop_stream();
        if self.state == State::Master {
            // As keepalived does on leaving MASTER for FAULT: resign
            // (priority 0), so the backup takes over after its skew time
            // instead of a silence — an AP-facing link or a tracked service
            // down while the peer link is up. On a dead peer link the send
            // fails, and the silence tells the backup instead.
            self.actions.push_back(Action::SendAdvert(self.advert(0)));
        }
        if self.state == State::Master || self.release_vips_on_new_master {
            self.actions.push_back(Action::RemoveVirtualIps);
        }
        self.release_vips_on_new_master = false;
        self.clear_timers();
        self.enter(State::Fault, reason, None);
    }

    /// Out of FAULT once nothing holds us there: start over as at startup.
    fn leave_fault(&mut self, now: Timestamp, reason: Reason) {
        if self.state != State::Fault || self.own_fault_cause().is_some() || self.group_fault() {
            return;
        }
        self.master = None;
        self.last_advert_at = None;
        self.previous_advert_at = None;
        self.stream_since = None;
        self.stream_fast = false;
        self.begin(now, reason);
    }

    /// Planned switchover: as a master, resign at once (a priority-0 advert,
    /// so the peer takes over after its skew time only, RFC 5798 §6.4.2) and
    /// become backup without preempting the new master until this node is
    /// master again. The VIPs stay until the new master's first advert (its
    /// gratuitous ARP has moved the clients by then), so the hand-over
    /// loses nothing.
    pub fn resign(&mut self, now: Timestamp) {
        if self.state != State::Master {
            return;
        }
        self.stop_stream();
        self.actions.push_back(Action::SendAdvert(self.advert(0)));
        self.clear_timers();
        self.yielded = true;
        self.release_vips_on_new_master = true;
        self.enter(State::Backup, Reason::Switchover, None);
        self.master_down_deadline = Some(now + self.master_down_interval());
    }

    /// Ends a planned switchover's maintenance state (`wimark-ha switchover
    /// --back`): with preemption and the higher priority, the next advert
    /// of the current master is discarded again (RFC 5798 §6.4.2) and
    /// Master_Down_Interval later this node takes mastership back. Returns
    /// whether there was a hand-over to end.
    pub fn reclaim(&mut self, now: Timestamp) -> bool {
        if !std::mem::take(&mut self.yielded) {
            return false;
        }
        if self.state == State::Backup {
            // The fast rule applies again from the master's next adverts.
            self.stall_grace_used = false;
            self.master_down_deadline = self
                .master_down_deadline
                .or(Some(now + self.master_down_interval()));
        }
        true
    }

    /// Whether this node handed mastership over and stays backup until
    /// [`reclaim`](Self::reclaim).
    pub fn handed_over(&self) -> bool {
        self.yielded
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    // ===== helpers =====

    /// Our advert (RFC 5798 §5.1): Advertisement_Interval, not the fast
    /// interval — a backup learns Master_Adver_Interval from it, and must
    /// keep the RFC's Master_Down_Interval as the fallback.
    fn advert(&self, priority: u8) -> Advert {
        Advert {
            version: self.params.version,
            vrid: self.params.vrid,
            priority,
            interval: self.params.advert_interval,
            auth: self.params.auth,
            addresses: self.params.virtual_ips.clone(),
        }
    }

    /// The kept VIPs go now: the new master spoke, or the hold ran out.
    fn release_vips(&mut self) {
        self.release_vips_on_new_master = false;
        self.vip_release_deadline = None;
        self.actions.push_back(Action::RemoveVirtualIps);
    }

    fn clear_timers(&mut self) {
        self.preempting = false;
        self.adver_deadline = None;
        self.master_down_deadline = None;
        self.fast_down_deadline = None;
        self.stall_grace_used = false;
        self.resigned = false;
    }

    /// The fast stream stops before anything else a master leaving its
    /// state sends: a resignation must be the last advert the peer hears.
    fn stop_stream(&mut self) {
        if std::mem::take(&mut self.streaming) {
            self.actions.push_back(Action::Heartbeat(Heartbeat::Stop));
        }
    }

    /// The standing order for the fast stream, valid for a lease the
    /// Adver_Timer renews (see [`HEARTBEAT_LEASE_INTERVALS`]).
    fn heartbeat(&self, now: Timestamp, every: Duration) -> Action {
        Action::Heartbeat(Heartbeat::Send {
            advert: self.advert(self.priority),
            every,
            until: now + HEARTBEAT_LEASE_INTERVALS * self.params.advert_interval,
        })
    }

    /// Entry into Master (RFC 5798 §6.4.1 / §6.4.2): "Send an ADVERTISEMENT"
    /// first — a lower-priority backup about to fire hears it before its own
    /// deadline (the fast rule's priority order rests on it) and it costs a
    /// send — then the VIPs and gratuitous ARP, then the fast stream.
    fn become_master(&mut self, now: Timestamp, reason: Reason, silence: Option<Duration>) {
        self.clear_timers();
        self.actions
            .push_back(Action::SendAdvert(self.advert(self.priority)));
        self.actions.push_back(Action::AddVirtualIps);
        self.actions.push_back(Action::AnnounceVirtualIps);
        if let Some(every) = self.fast_stream_interval() {
            self.actions.push_back(self.heartbeat(now, every));
            self.streaming = true;
        }
        // The Adver_Timer runs at Advertisement_Interval: it sends the
        // RFC's adverts, or renews the fast stream.
        self.adver_deadline = Some(now + self.params.advert_interval);
        self.master = None;
        self.yielded = false;
        self.release_vips_on_new_master = false;
        self.vip_release_deadline = None;
        self.enter(State::Master, reason, silence);
    }

    fn enter(&mut self, to: State, reason: Reason, silence: Option<Duration>) {
        let from = self.state;
        self.state = to;
        self.actions.push_back(Action::Transition {
            from,
            to,
            reason,
            silence,
        });
    }
}

/// The grace a Master_Down_Timer woken late gives without fast detection
/// (with it: one fast interval); late means by more than a quarter of it.
pub const STALL_GRACE_WITHOUT_FAST: Duration = Duration::from_millis(1);

/// The fast stream's lease, in Advertisement_Intervals: the Adver_Timer
/// renews it every interval, so a late renewal (a stalled engine) is
/// forgiven two intervals and a hung engine silences its node after three —
/// the backup then takes over, as the RFC's Master_Down_Interval would.
pub const HEARTBEAT_LEASE_INTERVALS: u32 = 3;

/// A fast stream younger than this does not arm the fast rule: a stream's
/// first seconds are its least punctual (the master's own start — BPF load,
/// BTF parse, containers starting — or the backup's), and a false takeover
/// at start-up is still a false takeover. The RFC timer judges meanwhile.
pub const FAST_RULE_WARMUP: Duration = Duration::from_secs(2);

/// The least span the fast rule's priority skew is a fraction of. The order
/// must outlast the higher backup's own lateness in deciding and sending —
/// a host's scheduling stalls, ≥ 1 ms many times a minute on a VM, which do
/// not shrink with the window: at 1 ms x 10 the window's 50/256 between the
/// 150 and the 100 was 1.95 ms, and a stalled 150 let the 100 send first in
/// 1 of 10 lab trials. 20 ms gives 3.9 ms per 50 priority points. A pair
/// naming its one peer has no skew at all.
pub const FAST_SKEW_SPAN_MIN: Duration = Duration::from_millis(20);

/// How long a master that shuts down keeps its VIPs at most, waiting for the
/// new master's first advert.
pub const SHUTDOWN_VIP_HOLD: Duration = Duration::from_millis(200);

/// The Max Adver Int a master puts in its last advert before a restart in
/// place so that a backup waits `hold` for it: Master_Down_Interval is
/// `3 * Master_Adver_Interval + Skew_Time` (RFC 5798 §6.1), so a third of the
/// hold, rounded up to the centisecond the field carries (§5.2.7), at most
/// 40.95 s.
pub fn hold_interval(hold: Duration) -> Duration {
    let centiseconds = hold.as_millis().div_ceil(30).clamp(1, 4095) as u64;
    Duration::from_millis(centiseconds * 10)
}
