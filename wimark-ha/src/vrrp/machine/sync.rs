//! A sync group's rules for one member (keepalived's `vrrp_sync_group`):
//! the members move together. The engine sees the whole group and tells
//! each member; the member keeps its own RFC rules and only:
//!
//! - holds a takeover (Backup → Master) until every member would take over
//!   too or already is master — so a member whose peer is healthy keeps the
//!   group where it is, and a member that would preempt alone does not;
//! - goes to BACKUP when another member left MASTER (resigning, priority 0,
//!   so the peer's member takes over after its skew time only);
//! - is in FAULT while another member is, and leaves it with it.

use super::*;

/// One member's view of its group.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct SyncMembership {
    /// Every member would take over (or is master): takeovers go ahead.
    gate_open: bool,
    /// A takeover this member decided and holds for the group.
    held: Option<(Reason, Option<Duration>)>,
    /// Another member is in FAULT.
    fault: bool,
}

impl Instance {
    /// This instance is a member of a sync group from now on: its takeovers
    /// wait for [`set_sync_gate`](Self::set_sync_gate).
    pub fn join_sync_group(&mut self) {
        self.sync.get_or_insert_with(SyncMembership::default);
    }

    /// Whether this member has decided a takeover it holds for its group.
    pub fn wants_master(&self) -> bool {
        self.state == State::Backup && self.sync.is_some_and(|s| s.held.is_some())
    }

    /// In FAULT for a reason of its own (its link, its trackers, the
    /// witness's isolation rule), not only because the group is.
    pub fn own_fault(&self) -> bool {
        self.state == State::Fault && self.own_fault_cause().is_some()
    }

    /// The group's word on takeovers: open when every member would take
    /// over or is master; a takeover held meanwhile goes ahead now, with
    /// the reason it was decided for.
    pub fn set_sync_gate(&mut self, now: Timestamp, open: bool) {
        let Some(sync) = self.sync.as_mut() else {
            return;
        };
        sync.gate_open = open;
        if !open || self.state != State::Backup {
            return;
        }
        if let Some((reason, silence)) = sync.held.take() {
            self.become_master(now, reason, silence);
        }
    }

    /// Another member left MASTER: this one follows into BACKUP. It resigns
    /// (priority 0: the peer's member takes over after its skew time, RFC
    /// 5798 §6.4.2) and keeps its VIPs until the new master's first advert,
    /// as a planned switchover does, but is not held back from taking over
    /// again: the group decides that.
    pub fn sync_backup(&mut self, now: Timestamp) {
        if self.state != State::Master || self.sync.is_none() {
            return;
        }
        self.stop_stream();
        self.actions.push_back(Action::SendAdvert(self.advert(0)));
        self.clear_timers();
        self.release_vips_on_new_master = true;
        self.enter(State::Backup, Reason::SyncGroup, None);
        self.master_down_deadline = Some(now + self.master_down_interval());
    }

    /// Another member is in FAULT (or none is any more).
    pub fn set_group_fault(&mut self, now: Timestamp, fault: bool) {
        let Some(sync) = self.sync.as_mut() else {
            return;
        };
        if sync.fault == fault {
            return;
        }
        sync.fault = fault;
        if fault {
            sync.held = None;
            self.enter_fault(Reason::SyncGroup);
        } else {
            self.leave_fault(now, Reason::SyncGroup);
        }
    }

    pub(super) fn group_fault(&self) -> bool {
        self.sync.is_some_and(|s| s.fault)
    }

    /// A takeover decided now: held if the group's gate is closed. The
    /// deadline that decided it is spent; hearing a master drops the hold.
    pub(super) fn held_by_sync_group(&mut self, reason: Reason, silence: Option<Duration>) -> bool {
        let Some(sync) = self.sync.as_mut() else {
            return false;
        };
        if sync.gate_open {
            return false;
        }
        sync.held = Some((reason, silence));
        self.master_down_deadline = None;
        self.fast_down_deadline = None;
        true
    }

    pub(super) fn drop_held_takeover(&mut self) {
        if let Some(sync) = self.sync.as_mut() {
            sync.held = None;
        }
    }
}
