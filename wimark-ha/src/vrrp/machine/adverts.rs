//! An advert heard: the receive checks (RFC 5798 §7.1, RFC 3768 §7.1) and
//! the Backup and Master rules for it (§6.4.2, §6.4.3).

use std::net::IpAddr;

use super::*;

impl Instance {
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
        self.check_false_takeover(source, at);
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

    pub(super) fn check_receive(&self, source: IpAddr, advert: &Advert) -> Result<(), Ignored> {
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
    pub(super) fn backup_heard(
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
            let skew = if self.fast_down_deadline.is_some() || self.stream_fast {
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
        if !self.params.preempt || self.yielded || advert.priority >= self.priority {
            self.follow(source, advert, at);
            if self.release_vips_on_new_master {
                self.release_vips();
            }
            return Ok(());
        }
        // "Else (Priority ... less than the local Priority and Preempt_Mode
        // is True): Discard the ADVERTISEMENT." The master-down timer keeps
        // running, so we take over.
        // wimark-ha: when the master we follow is the one below us (its
        // tracker lowered it, or ours healed), its advert is proof it lives
        // and lower: with fast detection we take over after the fast rule's
        // priority skew (none with one named peer) rather than a whole
        // Master_Down_Interval, and the takeover is a preemption — not a
        // master lost, not a false takeover when it speaks again.
        if self.master == Some(source) && !self.preempting {
            self.preempting = true;
            if self.params.fast_detect.is_some() {
                let deadline = now + self.fast_rule_skew(FAST_SKEW_SPAN_MIN);
                self.master_down_deadline = self.master_down_deadline.map(|d| d.min(deadline));
                self.fast_down_deadline = None;
            }
        }
        Err(Ignored::LowerPriority)
    }

    /// RFC 5798 §6.4.3 "If an ADVERTISEMENT is received" (Master).
    pub(super) fn master_heard(
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
                .push_back(Action::SendAdvert(self.advert(self.priority)));
            self.adver_deadline = Some(now + self.params.advert_interval);
            return Ok(());
        }
        let higher = advert.priority > self.priority
            || (advert.priority == self.priority
                && address_greater(source, self.params.primary_address));
        if !higher {
            // "Else: Discard the ADVERTISEMENT" — we stay master, and our
            // next advert will make the other side back off.
            return Err(Ignored::LowerPriority);
        }
        // "Cancel Adver_Timer; Set Master_Adver_Interval...; Set
        // Master_Down_Timer to Master_Down_Interval; Transition to Backup".
        self.stop_stream();
        self.adver_deadline = None;
        self.actions.push_back(Action::RemoveVirtualIps);
        self.enter(State::Backup, Reason::PreemptedByPeer, None);
        self.follow(source, advert, at);
        Ok(())
    }

    /// Accepts `source` as the master (RFC 5798 §6.4.2 / §6.4.3): v3 learns
    /// its interval ("Set Master_Adver_Interval...; Recompute the Skew_Time;
    /// Recompute the Master_Down_Interval"), and the Master_Down_Timer is
    /// reset, counted from when the kernel saw the advert, not from when we
    /// ran.
    pub(super) fn follow(&mut self, source: IpAddr, advert: &Advert, at: Timestamp) {
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
        self.preempting = false;
        self.stall_grace_used = false;
        // A master is heard: a takeover held for the sync group is off.
        self.drop_held_takeover();
        if slowing_down {
            self.previous_advert_at = None;
            self.stream_since = None;
            self.stream_fast = false;
            self.fast_down_deadline = None;
        } else {
            self.arm_fast_rule();
        }
    }

    pub(super) fn note_advert(&mut self, source: IpAddr, at: Timestamp) {
        if self.master != Some(source) {
            self.previous_advert_at = None;
            self.last_advert_at = None;
            self.stream_since = None;
            self.stream_fast = false;
        }
        self.master = Some(source);
        self.stream_since = self.stream_since.or(Some(at));
        if self.last_advert_at.is_none_or(|last| at >= last) {
            self.learn_gap(at);
            self.previous_advert_at = self.last_advert_at;
            self.last_advert_at = Some(at);
            if let (Some(fast), Some(previous)) = (self.params.fast_detect, self.previous_advert_at) {
                if at.saturating_since(previous) <= 2 * fast.interval {
                    self.stream_fast = true;
                }
            }
        }
    }

    /// The gap the advert at `at` closes, learned when the stream was fast
    /// before it (a master at RFC rates teaches the fast rule nothing; the
    /// same advert over a second link closes no gap).
    fn learn_gap(&mut self, at: Timestamp) {
        let (Some(fast), Some(last), Some(previous)) = (
            self.params.fast_detect,
            self.last_advert_at,
            self.previous_advert_at,
        ) else {
            return;
        };
        let gap = at.saturating_since(last);
        if gap.is_zero() || last.saturating_since(previous) > 2 * fast.interval {
            return;
        }
        if let Some(learner) = self.learner.as_mut() {
            learner.observe(gap, at);
        }
    }

    /// A master we declared down by the fast rule, heard again within
    /// Master_Down_Interval: it kept sending, late — a false takeover,
    /// reported, and learned from (auto mode widens past its gap).
    fn check_false_takeover(&mut self, source: IpAddr, at: Timestamp) {
        let Some(takeover) = self.fast_takeover else {
            return;
        };
        if at > takeover.until {
            self.fast_takeover = None;
            return;
        }
        if source != takeover.from || at <= takeover.last_heard {
            return;
        }
        self.fast_takeover = None;
        let gap = at.saturating_since(takeover.last_heard);
        if let Some(learner) = self.learner.as_mut() {
            learner.observe_false_takeover(gap, at);
        }
        self.actions.push_back(Action::FalseTakeover {
            peer: source,
            gap,
            window: takeover.window,
        });
    }
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
