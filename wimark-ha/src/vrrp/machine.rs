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

use super::{
    events::{Action, Ignored, Params, Reason, State, Timestamp},
    packet::{Advert, Version},
};

/// One VRRP virtual router.
#[derive(Debug)]
pub struct Instance {
    params: Params,
    state: State,
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
    master: Option<IpAddr>,
    actions: VecDeque<Action>,
}

impl Instance {
    pub fn new(params: Params) -> Self {
        let master_adver_interval = params.advert_interval;
        Self {
            params,
            state: State::Initialize,
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
            master: None,
            actions: VecDeque::new(),
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

    // ===== timer arithmetic =====

    /// Skew_Time: RFC 5798 §6.1 `((256 - Priority) * Master_Adver_Interval) / 256`;
    /// RFC 3768 §6.1 `(256 - Priority) / 256` seconds.
    pub fn skew_time(&self) -> Duration {
        let weight = 256 - u64::from(self.params.priority);
        let base = match self.params.version {
            Version::V3 => self.master_adver_interval,
            Version::V2 => Duration::from_secs(1),
        };
        Duration::from_nanos(base.as_nanos() as u64 * weight / 256)
    }

    /// Skew_Time scaled to the fast interval (used on a resignation from a
    /// master seen sending fast).
    pub fn fast_skew_time(&self) -> Duration {
        let weight = 256 - u64::from(self.params.priority);
        match self.params.fast_detect {
            Some(fast) => Duration::from_nanos(fast.interval.as_nanos() as u64 * weight / 256),
            None => self.skew_time(),
        }
    }

    /// Master_Down_Interval: `3 * Master_Adver_Interval + Skew_Time`
    /// (RFC 5798 §6.1; RFC 3768 §6.1 uses Advertisement_Interval).
    pub fn master_down_interval(&self) -> Duration {
        3 * self.master_adver_interval + self.skew_time()
    }

    /// The interval at which a master sends: the fast interval when fast
    /// detection is on, else Advertisement_Interval.
    fn send_interval(&self) -> Duration {
        match self.params.fast_detect {
            Some(fast) if fast.interval < self.params.advert_interval => fast.interval,
            _ => self.params.advert_interval,
        }
    }

    // ===== inputs =====

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
                if std::mem::take(&mut self.release_vips_on_new_master) {
                    self.actions.push_back(Action::RemoveVirtualIps);
                }
            }
            State::Master => {
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
        let mut advert = self.advert(self.params.priority);
        advert.interval = hold_interval(hold);
        self.actions.push_back(Action::SendAdvert(advert));
        self.adver_deadline = None;
        true
    }

    /// The interface lost its link: whatever we were, we can neither hear
    /// nor be heard, so give the VIPs up and stop advertising (FAULT).
    pub fn interface_down(&mut self, _now: Timestamp) {
        if matches!(self.state, State::Fault | State::Initialize) {
            return;
        }
        if self.state == State::Master || self.release_vips_on_new_master {
            self.actions.push_back(Action::RemoveVirtualIps);
        }
        self.release_vips_on_new_master = false;
        self.clear_timers();
        self.enter(State::Fault, Reason::InterfaceDown, None);
    }

    /// The link is back: start over as at startup (RFC 5798 §6.4.1).
    pub fn interface_up(&mut self, now: Timestamp) {
        if self.state != State::Fault {
            return;
        }
        self.master = None;
        self.last_advert_at = None;
        self.previous_advert_at = None;
        self.begin(now, Reason::InterfaceUp);
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

    /// An advert heard at `at` (the kernel's receive timestamp), already
    /// through the wire checks of `check_vrrp` (TTL, version, length,
    /// checksum). Applies the per-instance checks of RFC 5798 §7.1 / RFC 3768
    /// §7.1, then the state's rules.
    pub fn handle_advert(
        &mut self,
        now: Timestamp,
        source: IpAddr,
        advert: &Advert,
        at: Timestamp,
    ) -> Result<(), Ignored> {
        self.check_receive(source, advert)?;
        match self.state {
            State::Initialize => {
                // Shut down, waiting for the new master to speak first.
                if advert.priority > 0 && self.release_vips_on_new_master {
                    self.release_vips();
                }
                Ok(())
            }
            State::Fault => Ok(()),
            State::Backup => self.backup_heard(now, source, advert, at),
            State::Master => self.master_heard(now, source, advert, at),
        }
    }

    fn check_receive(&self, source: IpAddr, advert: &Advert) -> Result<(), Ignored> {
        if advert.vrid != self.params.vrid {
            return Err(Ignored::OtherVrid(advert.vrid));
        }
        if advert.version != self.params.version {
            return Err(Ignored::Version(advert.version.number()));
        }
        if source == self.params.primary_address {
            return Err(Ignored::Own);
        }
        if self.params.version == Version::V2 {
            // RFC 3768 §7.1: the auth type and data must match ours...
            if advert.auth != self.params.auth {
                return Err(Ignored::Auth);
            }
            // ...and so must the advert interval (v3 learns it instead).
            if advert.interval != self.params.advert_interval {
                return Err(Ignored::Interval(advert.interval));
            }
        }
        // RFC 5798 §5.2.7 gives the interval in centiseconds, and a master
        // advertising every 0 cs would shrink Master_Down_Interval to the
        // skew alone (§6.1) and make every backup take over at once: a
        // zero interval is not a master to learn from (found by fuzzing).
        if advert.interval.is_zero() {
            return Err(Ignored::Interval(advert.interval));
        }
        Ok(())
    }

    /// RFC 5798 §6.4.2 "If an ADVERTISEMENT is received" (Backup).
    fn backup_heard(
        &mut self,
        now: Timestamp,
        source: IpAddr,
        advert: &Advert,
        at: Timestamp,
    ) -> Result<(), Ignored> {
        if advert.priority == 0 {
            // "If the Priority in the ADVERTISEMENT is zero, then: Set the
            // Master_Down_Timer to Skew_Time."
            // wimark-ha extension: a master seen sending at the fast
            // interval gets the fast interval's skew, so a planned hand-over
            // between two wimark-ha nodes takes under a millisecond instead
            // of up to one advert interval. Priorities still order backups.
            let skew = if self.fast_down_deadline.is_some() {
                self.fast_skew_time()
            } else {
                self.skew_time()
            };
            self.note_advert(source, at);
            self.master_down_deadline = Some(now + skew);
            self.fast_down_deadline = None;
            self.resigned = true;
            return Ok(());
        }
        // "Else if Preempt_Mode is False, or if the Priority in the
        // ADVERTISEMENT is greater than or equal to the local Priority".
        if !self.params.preempt || self.yielded || advert.priority >= self.params.priority {
            self.follow(source, advert, at);
            if std::mem::take(&mut self.release_vips_on_new_master) {
                self.actions.push_back(Action::RemoveVirtualIps);
            }
            return Ok(());
        }
        // "Else (Priority ... less than the local Priority and Preempt_Mode
        // is True): Discard the ADVERTISEMENT." The master-down timer keeps
        // running, so we take over.
        Err(Ignored::LowerPriority)
    }

    /// RFC 5798 §6.4.3 "If an ADVERTISEMENT is received" (Master).
    fn master_heard(
        &mut self,
        now: Timestamp,
        source: IpAddr,
        advert: &Advert,
        at: Timestamp,
    ) -> Result<(), Ignored> {
        if advert.priority == 0 {
            // "If the Priority in the ADVERTISEMENT is zero, then: Send an
            // ADVERTISEMENT; Reset the Adver_Timer".
            self.actions
                .push_back(Action::SendAdvert(self.advert(self.params.priority)));
            self.adver_deadline = Some(now + self.send_interval());
            return Ok(());
        }
        let higher = advert.priority > self.params.priority
            || (advert.priority == self.params.priority
                && address_greater(source, self.params.primary_address));
        if !higher {
            // "Else: Discard the ADVERTISEMENT" — we stay master, and our
            // next advert will make the other side back off.
            return Err(Ignored::LowerPriority);
        }
        // "Cancel Adver_Timer; Set Master_Adver_Interval...; Set
        // Master_Down_Timer to Master_Down_Interval; Transition to Backup".
        self.adver_deadline = None;
        self.actions.push_back(Action::RemoveVirtualIps);
        self.enter(State::Backup, Reason::PreemptedByPeer, None);
        self.follow(source, advert, at);
        Ok(())
    }

    /// Call when [`poll_timeout`](Self::poll_timeout) has passed. The runtime
    /// first feeds every advert the kernel recorded meanwhile, so a late
    /// wake-up never mistakes our own stall for the peer's silence.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        match self.state {
            State::Initialize => {
                if self.vip_release_deadline.is_some_and(|d| now >= d) {
                    // Nobody spoke up within SHUTDOWN_VIP_HOLD: go anyway.
                    self.release_vips();
                }
            }
            State::Fault => {}
            State::Master => {
                if self.adver_deadline.is_some_and(|d| now >= d) {
                    // RFC 5798 §6.4.3 "If the Adver_Timer fires": send an
                    // ADVERTISEMENT, reset the Adver_Timer. Deadlines are
                    // absolute: a late firing does not shift the cadence.
                    self.actions
                        .push_back(Action::SendAdvert(self.advert(self.params.priority)));
                    let mut next = self.adver_deadline.unwrap_or(now) + self.send_interval();
                    if next <= now {
                        next = now + self.send_interval();
                    }
                    self.adver_deadline = Some(next);
                }
            }
            State::Backup => self.backup_timeout(now),
        }
    }

    fn backup_timeout(&mut self, now: Timestamp) {
        let silence = self.last_advert_at.map(|at| now.saturating_since(at));
        if let Some(deadline) = self.fast_down_deadline.filter(|d| now >= *d) {
            let fast = self
                .params
                .fast_detect
                .expect("fast deadline implies fast detection");
            // Stall-aware: if we woke more than one fast interval late, our
            // own stall could explain the silence; give the peer one more
            // interval from now before believing it (once per silence).
            if now.saturating_since(deadline) > fast.interval && !self.stall_grace_used {
                self.stall_grace_used = true;
                self.fast_down_deadline = Some(now + fast.interval);
                // A stall long enough to pass Master_Down_Interval too
                // explains that silence as well: the grace covers both.
                self.master_down_deadline = self
                    .master_down_deadline
                    .map(|d| d.max(now + fast.interval));
                return;
            }
            self.become_master(now, Reason::FastDetect, silence);
            return;
        }
        if self.master_down_deadline.is_some_and(|d| now >= d) {
            // RFC 5798 §6.4.2 "If the Master_Down_Timer fires": send an
            // ADVERTISEMENT, broadcast gratuitous ARP / send unsolicited ND,
            // set the Adver_Timer, transition to Master.
            let reason = if self.resigned {
                Reason::PeerResigned
            } else {
                Reason::MasterDown
            };
            self.become_master(now, reason, silence);
        }
    }

    /// The earliest deadline, if any timer runs.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        [
            self.adver_deadline,
            self.master_down_deadline,
            self.fast_down_deadline,
            self.vip_release_deadline,
        ]
        .into_iter()
        .flatten()
        .min()
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

    fn release_vips(&mut self) {
        self.release_vips_on_new_master = false;
        self.vip_release_deadline = None;
        self.actions.push_back(Action::RemoveVirtualIps);
    }

    /// Accepts `source` as the master (RFC 5798 §6.4.2 / §6.4.3): v3 learns
    /// its interval ("Set Master_Adver_Interval...; Recompute the Skew_Time;
    /// Recompute the Master_Down_Interval"), and the Master_Down_Timer is
    /// reset, counted from when the kernel saw the advert, not from when we
    /// ran.
    fn follow(&mut self, source: IpAddr, advert: &Advert, at: Timestamp) {
        self.note_advert(source, at);
        // A master announcing a longer interval than it had is saying it
        // will be quiet that long (wimark-ha's restart hold does so): the
        // fast rule must not judge it until its fast stream resumes.
        let slowing_down =
            self.params.version == Version::V3 && advert.interval > self.master_adver_interval;
        if self.params.version == Version::V3 {
            self.master_adver_interval = advert.interval;
        }
        // From the latest advert heard: over several heartbeat links the
        // same advert arrives more than once, the older copy possibly last.
        let latest = self.last_advert_at.unwrap_or(at);
        self.master_down_deadline = Some(latest + self.master_down_interval());
        self.resigned = false;
        self.stall_grace_used = false;
        if slowing_down {
            self.previous_advert_at = None;
            self.fast_down_deadline = None;
        } else {
            self.arm_fast_rule();
        }
    }

    fn note_advert(&mut self, source: IpAddr, at: Timestamp) {
        if self.master != Some(source) {
            self.previous_advert_at = None;
            self.last_advert_at = None;
        }
        self.master = Some(source);
        if self.last_advert_at.is_none_or(|last| at >= last) {
            self.previous_advert_at = self.last_advert_at;
            self.last_advert_at = Some(at);
        }
    }

    /// Arms the fast rule only while the master is observed sending at
    /// about the fast interval: two adverts no more than two fast intervals
    /// apart. A keepalived master (RFC rates) never arms it.
    fn arm_fast_rule(&mut self) {
        self.fast_down_deadline = None;
        let Some(fast) = self.params.fast_detect else {
            return;
        };
        // Handed over on purpose: a transient silence of a few fast
        // intervals must not undo the operator's switchover (it did: a
        // false fast takeover took the VIP back and kept it). Only the
        // RFC's Master_Down_Interval speaks for the new master's death.
        if self.yielded {
            return;
        }
        let (Some(last), Some(previous)) = (self.last_advert_at, self.previous_advert_at) else {
            return;
        };
        if last.saturating_since(previous) <= 2 * fast.interval {
            self.fast_down_deadline = Some(last + fast.multiplier * fast.interval);
        }
    }

    fn clear_timers(&mut self) {
        self.adver_deadline = None;
        self.master_down_deadline = None;
        self.fast_down_deadline = None;
        self.stall_grace_used = false;
        self.resigned = false;
    }

    /// Entry into Master (RFC 5798 §6.4.1 / §6.4.2): VIP and gratuitous ARP
    /// first — the fast path — then the advert.
    fn become_master(&mut self, now: Timestamp, reason: Reason, silence: Option<Duration>) {
        self.clear_timers();
        self.actions.push_back(Action::AddVirtualIps);
        self.actions.push_back(Action::AnnounceVirtualIps);
        self.actions
            .push_back(Action::SendAdvert(self.advert(self.params.priority)));
        self.adver_deadline = Some(now + self.send_interval());
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

/// RFC 5798 §6.4.3: "the primary IPvX Address of the sender is greater than
/// the local primary IPvX Address" — compared as unsigned integers in network
/// byte order.
fn address_greater(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets() > b.octets(),
        (IpAddr::V6(a), IpAddr::V6(b)) => a.octets() > b.octets(),
        _ => false,
    }
}
