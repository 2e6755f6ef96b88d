//! The machine's clock: Skew_Time and Master_Down_Interval (RFC 5798
//! §6.1), its deadlines, what fires when one passes, and the fast rule's
//! arming.

use std::time::Duration;

use super::*;

/// How late a deadline may fire before the machine believes its own stall
/// could explain the silence: a quarter of the grace it would give. A
/// realtime thread's timer is normally late by tens of microseconds; a
/// quarter of a millisecond is a stall (this VM's are 1–10 ms).
fn stall_lateness(grace: Duration) -> Duration {
    grace / 4
}

impl Instance {
    /// Skew_Time: RFC 5798 §6.1 `((256 - Priority) * Master_Adver_Interval) / 256`;
    /// RFC 3768 §6.1 `(256 - Priority) / 256` seconds.
    pub fn skew_time(&self) -> Duration {
        let weight = 256 - u64::from(self.priority);
        let base = match self.params.version {
            Version::V3 => self.master_adver_interval,
            Version::V2 => Duration::from_secs(1),
        };
        Duration::from_nanos(base.as_nanos() as u64 * weight / 256)
    }

    /// Skew_Time scaled to the fast interval (used on a resignation from a
    /// master seen sending fast).
    pub fn fast_skew_time(&self) -> Duration {
        let weight = 256 - u64::from(self.priority);
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

    /// The fast stream's interval, when fast detection is on.
    pub(super) fn fast_stream_interval(&self) -> Option<Duration> {
        self.params
            .fast_detect
            .map(|fast| fast.interval)
            .filter(|interval| *interval < self.params.advert_interval)
    }

    /// wimark-ha's fast rule ordered by priority, as Skew_Time orders the
    /// RFC timer (RFC 5798 §6.1): `(256 - Priority) / 256` of the window
    /// (at least [`FAST_SKEW_SPAN_MIN`]) more, so of two backups firing on
    /// the same silence the higher one's advert reaches the lower one first.
    /// None when the config names our one peer: no other backup can compete.
    pub fn fast_rule_skew(&self, window: Duration) -> Duration {
        if self.params.sole_peer {
            return Duration::ZERO;
        }
        let weight = 256 - u64::from(self.priority);
        let span = window.max(FAST_SKEW_SPAN_MIN);
        Duration::from_nanos(span.as_nanos() as u64 * weight / 256)
    }

    // ===== inputs =====

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
            State::Fault => self.vip_fault_timeout(now),
            State::Master => {
                if self.adver_deadline.is_some_and(|d| now >= d) {
                    // RFC 5798 §6.4.3 "If the Adver_Timer fires": send an
                    // ADVERTISEMENT, reset the Adver_Timer. With the fast
                    // stream running, its senders send them; the timer
                    // renews their lease. Deadlines are absolute: a late
                    // firing does not shift the cadence.
                    let order = match self.fast_stream_interval() {
                        Some(every) if self.streaming => self.heartbeat(now, every),
                        _ => Action::SendAdvert(self.advert(self.priority)),
                    };
                    self.actions.push_back(order);
                    let interval = self.params.advert_interval;
                    let mut next = self.adver_deadline.unwrap_or(now) + interval;
                    if next <= now {
                        next = now + interval;
                    }
                    self.adver_deadline = Some(next);
                }
            }
            State::Backup => self.backup_timeout(now),
        }
    }

    pub(super) fn backup_timeout(&mut self, now: Timestamp) {
        let silence = self.last_advert_at.map(|at| now.saturating_since(at));
        if let Some(deadline) = self.fast_down_deadline.filter(|d| now >= *d) {
            let fast = self
                .params
                .fast_detect
                .expect("fast deadline implies fast detection");
            // Stall-aware: if we woke late, our own stall could explain the
            // silence — a whole-VM stall silences the master's senders too,
            // and one that ends just after our deadline leaves us late by
            // less than an interval (CI saw a 5.07 ms silence against a
            // ~4.6 ms window, woken ~0.5 ms late). Give the peer one more
            // interval from now before believing it (once per silence).
            if now.saturating_since(deadline) > stall_lateness(fast.interval) && !self.stall_grace_used {
                self.stall_grace_used = true;
                self.fast_down_deadline = Some(now + fast.interval);
                // A stall long enough to pass Master_Down_Interval too
                // explains that silence as well: the grace covers both.
                self.master_down_deadline = self
                    .master_down_deadline
                    .map(|d| d.max(now + fast.interval));
                return;
            }
            if self.held_by_sync_group(Reason::FastDetect, silence) {
                return;
            }
            // Remembered until Master_Down_Interval has passed: if this
            // master speaks again meanwhile, it was late, not dead.
            self.fast_takeover = self
                .master
                .zip(self.last_advert_at)
                .map(|(from, last_heard)| FastTakeover {
                    from,
                    last_heard,
                    window: deadline.saturating_since(last_heard),
                    until: now + self.master_down_interval(),
                });
            self.become_master(now, Reason::FastDetect, silence);
            return;
        }
        if let Some(deadline) = self.master_down_deadline.filter(|d| now >= *d) {
            // Stall-aware, as the fast rule: woken late by more than a
            // fast interval (1 ms without fast detection), our own stall —
            // on a VM, usually the whole VM's, which silenced the master
            // too — could explain the silence; give the master that much
            // more from now, once per silence. A dead master costs the
            // grace only when we were late anyway.
            let grace = self
                .params
                .fast_detect
                .map_or(STALL_GRACE_WITHOUT_FAST, |fast| fast.interval);
            if now.saturating_since(deadline) > stall_lateness(grace)
                && !self.stall_grace_used
                && !self.resigned
            {
                self.stall_grace_used = true;
                self.master_down_deadline = Some(now + grace);
                return;
            }
            // RFC 5798 §6.4.2 "If the Master_Down_Timer fires": send an
            // ADVERTISEMENT, broadcast gratuitous ARP / send unsolicited ND,
            // set the Adver_Timer, transition to Master.
            let reason = if self.resigned {
                Reason::PeerResigned
            } else if self.preempting {
                Reason::Preempting
            } else {
                Reason::MasterDown
            };
            // A preemption ends no silence: the master was heard just now.
            let silence = silence.filter(|_| reason != Reason::Preempting);
            if self.held_by_sync_group(reason, silence) {
                return;
            }
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
            self.vip_fault_until.filter(|_| self.state == State::Fault),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Arms the fast rule only while the master is observed sending at
    /// about the fast interval: two adverts of its stream no more than two
    /// fast intervals apart, a stream older than [`FAST_RULE_WARMUP`], a
    /// window learned (auto). A keepalived master (RFC rates) never arms it.
    pub(super) fn arm_fast_rule(&mut self) {
        self.fast_down_deadline = None;
        if self.params.fast_detect.is_none() {
            return;
        }
        // Handed over on purpose: a transient silence of a few fast
        // intervals must not undo the operator's switchover (it did: a
        // false fast takeover took the VIP back and kept it). Only the
        // RFC's Master_Down_Interval speaks for the new master's death.
        if self.yielded {
            return;
        }
        let Some(last) = self.last_advert_at else {
            return;
        };
        // The stream has shown two adverts at most two fast intervals
        // apart: one late advert since (a sender's missed turn leaves two or
        // three intervals) is just what the window is there to judge, so it
        // does not disarm the rule — it did, and the backup fell back to the
        // RFC timer, 2 ms ahead of a keepalived backup at 100, which then
        // took over in 1 of 10 trials.
        if !self.stream_fast {
            return;
        }
        if self
            .stream_since
            .is_none_or(|since| last.saturating_since(since) < FAST_RULE_WARMUP)
        {
            return;
        }
        let Some(window) = self
            .learner
            .as_ref()
            .filter(|l| l.armed())
            .map(|l| l.window())
        else {
            return;
        };
        self.fast_down_deadline = Some(last + window + self.fast_rule_skew(window));
    }
}
