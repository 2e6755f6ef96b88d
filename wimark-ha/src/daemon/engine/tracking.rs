//! The trackers' observations carried to the state machines: interface
//! trackers from the engine's own link notifications, script and file
//! trackers from their tasks (`Command::Track`).
//!
//! Owns: which tracker an observation is for, the verdict handed to
//! `Instance::set_tracking`, the log line of each tracker change and the
//! words a transition's record gets for its cause. Must not: count rises
//! and falls or weigh (the `track` module does), or decide a transition
//! (the machine does).

use super::*;
use crate::{
    config::TrackKind,
    daemon::link::LinkChange,
    track::{self, Observation},
    vrrp::Reason,
};

/// The kernel's index of each interface tracker's link, by tracker index.
pub(super) fn tracked_links(config: &InstanceConfig) -> Vec<(usize, Option<u32>)> {
    config
        .trackers
        .iter()
        .enumerate()
        .filter_map(|(k, tracker)| match &tracker.kind {
            TrackKind::Interface(name) => Some((k, index_of(name))),
            _ => None,
        })
        .collect()
}

fn index_of(name: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(name).ok()
}

fn link_name(instance: &EngineInstance, tracker: usize) -> &str {
    match &instance.trackers[tracker].config.kind {
        TrackKind::Interface(name) => name,
        _ => "",
    }
}

impl Engine {
    /// Every interface tracker of instance `i`, read now (at the start, and
    /// the verdict applied before the machine starts).
    pub(super) fn track_links_now(&mut self, i: usize, t: Timestamp) {
        let instance = &mut self.instances[i];
        for slot in 0..instance.tracked_links.len() {
            let k = instance.tracked_links[slot].0;
            let name = link_name(instance, k).to_string();
            instance.tracked_links[slot].1 = index_of(&name);
            let usable = super::super::link::link_usable(&name).unwrap_or(false);
            instance.trackers[k].observe(Observation::Link { usable });
        }
        // A link already down at the start is journaled as a change.
        let failed: Vec<usize> = instance
            .trackers
            .iter()
            .enumerate()
            .filter(|(_, t)| t.health() == crate::records::Health::Failed)
            .map(|(k, _)| k)
            .collect();
        self.apply_tracking(i, &failed, t);
    }

    /// Every tracked link, read now (after lost link notifications).
    pub(super) fn tracked_links_now(&self) -> Vec<LinkChange> {
        self.instances
            .iter()
            .flat_map(|instance| {
                instance.tracked_links.iter().filter_map(|(k, _)| {
                    let name = link_name(instance, *k);
                    let index = index_of(name)?;
                    let usable = super::super::link::link_usable(name).unwrap_or(false);
                    Some(LinkChange::read(index, name, usable))
                })
            })
            .collect()
    }

    /// A link notification: the interface trackers of instance `i` that
    /// watch that link, known by index or — a link removed and created
    /// again has a new index — by the name the notification carries. No
    /// syscall: this runs on the engine thread.
    pub(super) fn track_link(&mut self, i: usize, change: &LinkChange, t: Timestamp) {
        let instance = &mut self.instances[i];
        let mut changed = Vec::new();
        for slot in 0..instance.tracked_links.len() {
            let (k, known) = instance.tracked_links[slot];
            let by_name = change.name.as_deref() == Some(link_name(instance, k));
            if known != Some(change.index) && !by_name {
                continue;
            }
            instance.tracked_links[slot].1 = (!change.removed).then_some(change.index);
            if instance.trackers[k].observe(Observation::Link {
                usable: change.usable,
            }) {
                changed.push(k);
            }
        }
        for &k in &changed {
            self.log_tracker(i, k);
        }
        if !changed.is_empty() {
            self.apply_tracking(i, &changed, t);
        }
    }

    /// A script or file tracker's observation.
    pub(super) fn track(&mut self, i: usize, k: usize, observation: Observation, t: Timestamp) {
        let Some(tracker) = self
            .instances
            .get_mut(i)
            .and_then(|x| x.trackers.get_mut(k))
        else {
            return;
        };
        // The detail (the latest exit status, the value) shows in status
        // even when the verdict stays.
        self.status_changed = true;
        if tracker.observe(observation) {
            self.log_tracker(i, k);
            self.apply_tracking(i, &[k], t);
        }
    }

    fn log_tracker(&self, i: usize, k: usize) {
        let instance = &self.instances[i];
        let tracker = &instance.trackers[k];
        let contribution = tracker.contribution();
        let effect = if contribution.fault {
            "holds the instance in FAULT".to_string()
        } else {
            format!("weight in force {:+}", contribution.weight_in_force)
        };
        tracing::warn!(
            instance = %instance.config.name,
            tracker = %tracker.name(),
            health = %tracker.health(),
            "{}: {effect}",
            tracker.describe()
        );
    }

    /// The verdict of instance `i`'s trackers, to its machine; `changed`:
    /// the trackers whose contribution changed, journaled with it.
    fn apply_tracking(&mut self, i: usize, changed: &[usize], t: Timestamp) {
        let grouped = self.sync_group_of(i).is_some();
        let instance = &mut self.instances[i];
        let mut verdict = track::verdict(instance.config.priority, &instance.trackers);
        if grouped {
            // keepalived's rule for sync groups: weights are not applied, a
            // failed tracker is FAULT — a member's priority alone cannot
            // move a group (the peer's members would all have to preempt),
            // its FAULT moves all of it.
            verdict = track::Verdict {
                priority: instance.config.priority,
                fault: instance
                    .trackers
                    .iter()
                    .any(|t| t.health() == crate::records::Health::Failed),
            };
        }
        for &k in changed {
            let _ = self.observer.send(crate::daemon::observer::Observed::Entry(
                crate::history::Entry::Tracker {
                    instance: instance.config.name.clone(),
                    at_unix_ms: unix_ms(),
                    tracker: instance.trackers[k].status(),
                    priority: verdict.priority,
                },
            ));
        }
        let before = instance.machine.priority();
        if verdict.priority != before {
            tracing::warn!(
                instance = %instance.config.name,
                from = before,
                to = verdict.priority,
                cause = track::cause(&instance.trackers, false).as_deref().unwrap_or("no tracker in force"),
                "effective priority changed"
            );
        }
        instance
            .machine
            .set_tracking(t, verdict.priority, verdict.fault);
        self.status_changed = true;
        self.carry_out(i, t);
    }

    /// The trackers behind a transition, in words, when they are behind it.
    pub(super) fn transition_cause(
        &self,
        i: usize,
        from: State,
        to: State,
        reason: Reason,
    ) -> Option<String> {
        let instance = &self.instances[i];
        if reason == Reason::TrackerFault {
            let grouped = self.sync_group_of(i).is_some();
            if grouped {
                let failed: Vec<String> = instance
                    .trackers
                    .iter()
                    .filter(|t| t.health() == crate::records::Health::Failed)
                    .map(|t| t.describe())
                    .collect();
                return (!failed.is_empty())
                    .then(|| format!("{} (in a sync group: FAULT, weights not applied)", failed.join("; ")));
            }
            return track::cause(&instance.trackers, true);
        }
        if reason == Reason::SyncGroup {
            return self.sync_cause(i);
        }
        // Lowered below the configured priority, a master that gives way
        // gave way because of its trackers.
        let priority = instance.machine.priority();
        if from == State::Master && to == State::Backup && priority < instance.config.priority {
            return track::cause(&instance.trackers, false)
                .map(|cause| format!("our priority {priority}: {cause}"));
        }
        None
    }
}
