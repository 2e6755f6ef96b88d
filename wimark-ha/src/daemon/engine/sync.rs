//! Sync groups across the engine's instances (`[[sync_group]]`,
//! keepalived's `vrrp_sync_group`): after any member's actions, the group
//! is looked at as a whole and each member told what the group says.
//!
//! Owns: the group rules between members — a member in FAULT of its own
//! holds all in FAULT; a member that left MASTER (and would not take over
//! again) takes the other masters to BACKUP; takeovers go ahead only when
//! every member would take over or is master. Must not: decide a member's
//! own RFC transitions (its machine does, holding a takeover for the group).

use super::*;

/// One sync group: its name and its members' indices in the engine.
#[derive(Clone, Debug)]
pub struct SyncGroup {
    pub name: String,
    pub members: Vec<usize>,
}

impl Engine {
    /// The sync group instance `i` is a member of.
    pub(super) fn sync_group_of(&self, i: usize) -> Option<&SyncGroup> {
        self.sync_groups.iter().find(|g| g.members.contains(&i))
    }

    /// After instance `i`'s actions: its group's members follow. Members'
    /// own actions are carried out here; their `carry_out` does not come
    /// back (one pass of the group at a time).
    pub(super) fn follow_sync_group(&mut self, i: usize, t: Timestamp) {
        if self.syncing {
            return;
        }
        let Some(group) = self.sync_group_of(i).cloned() else {
            return;
        };
        self.syncing = true;
        // A few passes at most: each moves members one step (FAULT,
        // BACKUP, the gate), and a pass that moves nothing ends it.
        for _ in 0..4 {
            let states: Vec<State> = group
                .members
                .iter()
                .map(|&m| self.instances[m].machine.state())
                .collect();
            let machines: Vec<&crate::vrrp::Instance> = group
                .members
                .iter()
                .map(|&m| &self.instances[m].machine)
                .collect();
            let fault = machines.iter().any(|m| m.own_fault());
            let left = machines
                .iter()
                .any(|m| m.state() == State::Backup && !m.wants_master());
            let all_would = machines
                .iter()
                .all(|m| m.state() == State::Master || m.wants_master());
            for &m in &group.members {
                let member = &mut self.instances[m].machine;
                member.set_group_fault(t, fault);
                if left && !fault {
                    member.sync_backup(t);
                }
                member.set_sync_gate(t, all_would && !fault);
                self.carry_out(m, t);
            }
            let after: Vec<State> = group
                .members
                .iter()
                .map(|&m| self.instances[m].machine.state())
                .collect();
            if after == states {
                break;
            }
        }
        self.syncing = false;
    }

    /// The words a transition the group made gets: which group, and which
    /// member moved it.
    pub(super) fn sync_cause(&self, i: usize) -> Option<String> {
        let group = self.sync_group_of(i)?;
        let movers: Vec<String> = group
            .members
            .iter()
            .filter(|&&m| m != i)
            .map(|&m| {
                let instance = &self.instances[m];
                format!("{} {}", instance.config.name, instance.machine.state())
            })
            .collect();
        Some(format!("sync group {}: {}", group.name, movers.join(", ")))
    }
}
