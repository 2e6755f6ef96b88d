//! The operator's and the other services' commands to the engine that are
//! more than one call into a machine: a planned switchover and its end, the
//! witness's isolation rule, a restart in place.
//!
//! Owns: finding the instances a command names and reporting what it did.
//! Must not: decide protocol rules (the machines' `resign`, `reclaim`,
//! `set_witness_isolated`, `restart_hold` do).

use super::*;

impl Engine {
    pub(super) fn switchover(&mut self, name: Option<&str>, t: Timestamp) -> Result<String, String> {
        let mut moved = Vec::new();
        for i in 0..self.instances.len() {
            let instance = &mut self.instances[i];
            if name.is_some_and(|n| n != instance.config.name) {
                continue;
            }
            if instance.machine.state() == State::Master {
                instance.machine.resign(t);
                moved.push(instance.config.name.clone());
                self.carry_out(i, t);
            }
        }
        match (moved.is_empty(), name) {
            (false, _) => Ok(format!("resigned mastership of {}", moved.join(", "))),
            (true, Some(n)) if !self.instances.iter().any(|i| i.config.name == n) => {
                Err(format!("no instance named `{n}`"))
            }
            (true, _) => {
                Err("this node is master of no instance: nothing to hand over".to_string())
            }
        }
    }

    /// The witness's isolation rule gives the roles instance's VIPs up (or
    /// ends that); its sync group follows through `carry_out`.
    pub(super) fn witness_isolation(&mut self, name: &str, isolated: bool, t: Timestamp) {
        let Some(i) = self.instances.iter().position(|i| i.config.name == name) else {
            tracing::error!("witness isolation for `{name}`: no such instance");
            return;
        };
        self.instances[i].machine.set_witness_isolated(t, isolated);
        self.status_changed = true;
        self.carry_out(i, t);
    }

    /// Ends the hand-over of each instance that handed mastership over:
    /// it may preempt again (and, with the higher priority, will).
    pub(super) fn switch_back(&mut self, name: Option<&str>, t: Timestamp) -> Result<String, String> {
        if let Some(n) = name.filter(|n| !self.instances.iter().any(|i| i.config.name == *n)) {
            return Err(format!("no instance named `{n}`"));
        }
        let mut ended = Vec::new();
        for instance in &mut self.instances {
            if name.is_some_and(|n| n != instance.config.name) {
                continue;
            }
            if instance.machine.reclaim(t) {
                tracing::info!(instance = %instance.config.name, "hand-over ended: preemption and fast detection apply again");
                ended.push(instance.config.name.clone());
            }
        }
        self.status_changed = true;
        if ended.is_empty() {
            Err("no instance here handed mastership over: nothing to take back".to_string())
        } else {
            Ok(format!(
                "hand-over ended for {}: it preempts again if its priority is higher",
                ended.join(", ")
            ))
        }
    }

    /// Each master's machine sends its last advert with an interval that
    /// makes the peer wait `hold`, and keeps its VIPs for the next process
    /// to resume.
    pub(super) fn restart_hold(&mut self, hold: Duration) -> Vec<crate::daemon::restart::Held> {
        let t = now();
        let mut held = Vec::new();
        for i in 0..self.instances.len() {
            if !self.instances[i].machine.restart_hold(t, hold) {
                continue;
            }
            self.carry_out(i, t);
            let instance = &self.instances[i];
            if instance.config.is_address_owner() {
                // Its addresses are its own: nothing to hand to the next
                // process, nothing a failed restart should remove.
                continue;
            }
            tracing::info!(instance = %instance.config.name, ?hold, interval = ?crate::vrrp::hold_interval(hold), "restart hold: the peer was told to wait");
            held.push(crate::daemon::restart::Held {
                instance: instance.config.name.clone(),
                interface: instance.config.interface.clone(),
                vrid: instance.config.vrid,
                virtual_ips: instance
                    .config
                    .virtual_ips
                    .iter()
                    .map(|v| v.address)
                    .collect(),
                until_unix_ms: unix_ms() + hold.as_millis() as u64,
            });
        }
        self.publish(now());
        held
    }
}
