//! Carrying out what the state machine decided, in its order: VIPs,
//! gratuitous ARP, adverts (on every link), transitions with their timings
//! handed to the roles switcher and the observer.
//!
//! Owns: those side effects. Must not: decide anything the machine did not.

use super::*;

impl Engine {
    /// Carries out the instance's pending actions, in order, timing the
    /// takeover's fast path.
    pub(super) fn carry_out(&mut self, i: usize, decided: Timestamp) {
        let mut vip_added = None;
        let mut garp_sent = None;
        while let Some(action) = self.instances[i].machine.poll_action() {
            if !matches!(action, Action::SendAdvert(_)) {
                self.status_changed = true;
            }
            match action {
                Action::AddVirtualIps => {
                    self.add_vips(i);
                    vip_added = Some(now().saturating_since(decided));
                }
                Action::AnnounceVirtualIps => {
                    self.announce(i);
                    garp_sent = Some(now().saturating_since(decided));
                    let delay = self.instances[i].config.garp.delay;
                    self.instances[i].second_garp_burst = Some(now() + delay);
                }
                Action::SendAdvert(advert) => self.send_advert(i, &advert),
                Action::RemoveVirtualIps => {
                    self.remove_vips(i);
                    self.instances[i].second_garp_burst = None;
                }
                Action::Transition {
                    from,
                    to,
                    reason,
                    silence,
                } => {
                    let instance = &mut self.instances[i];
                    let us = |d: Duration| d.as_micros() as u64;
                    tracing::info!(
                        instance = %instance.config.name,
                        %from,
                        %to,
                        %reason,
                        silence_us = silence.map(us),
                        vip_added_us = vip_added.map(us),
                        garp_sent_us = garp_sent.map(us),
                        "VRRP transition"
                    );
                    // The slow work (hooks, containers, notify) is the role
                    // switcher's, on another thread, after VIP and GARP.
                    let _ = self.roles.send(crate::roles::RoleEvent {
                        instance: instance.config.name.clone(),
                        state: to,
                        priority: instance.config.priority,
                        peer_lost: reason.peer_lost(),
                    });
                    let record = TransitionRecord {
                        at_unix_ms: unix_ms(),
                        from,
                        to,
                        reason,
                        silence,
                        vip_added,
                        garp_sent,
                    };
                    if to == State::Master {
                        let _ = self
                            .observer
                            .send(crate::daemon::observer::Observed::Takeover {
                                instance: instance.config.name.clone(),
                                monitor: instance.reader,
                                decided_ns: decided.0,
                            });
                    }
                    let _ = self.observer.send(crate::daemon::observer::Observed::Entry(
                        crate::history::Entry::Transition {
                            instance: instance.config.name.clone(),
                            record: record.clone(),
                        },
                    ));
                    instance.remember(record);
                }
            }
        }
    }

    pub(super) fn add_vips(&mut self, i: usize) {
        let instance = &mut self.instances[i];
        let mut failures = Vec::new();
        for vip in &instance.config.virtual_ips {
            if let Err(e) = self
                .runtime
                .block_on(self.vips.add(instance.interface.index, *vip))
            {
                tracing::error!(instance = %instance.config.name, %vip, "adding the VIP failed: {e}");
                failures.push(format!("{vip}: {e}"));
            }
        }
        instance.holds_vips = true;
        instance.fault =
            (!failures.is_empty()).then(|| format!("VIP not added: {}", failures.join("; ")));
    }

    pub(super) fn remove_vips(&mut self, i: usize) {
        let instance = &mut self.instances[i];
        for vip in &instance.config.virtual_ips {
            if let Err(e) = self
                .runtime
                .block_on(self.vips.remove(instance.interface.index, *vip))
            {
                tracing::error!(instance = %instance.config.name, %vip, "removing the VIP failed: {e}");
                instance.fault = Some(format!("VIP {vip} not removed: {e}"));
            }
        }
        instance.holds_vips = false;
    }

    pub(super) fn announce(&mut self, i: usize) {
        let instance = &mut self.instances[i];
        for _ in 0..instance.config.garp.repeat {
            for vip in &instance.config.virtual_ips {
                if let Err(e) = instance.announcer.announce(vip.address) {
                    tracing::warn!(instance = %instance.config.name, %vip, "gratuitous ARP/NA failed: {e}");
                }
            }
        }
    }

    /// keepalived's `garp_master_delay`: a second burst once the network
    /// has settled.
    pub(super) fn second_garp(&mut self, i: usize, t: Timestamp) {
        if self.instances[i].second_garp_burst.is_some_and(|d| d <= t) {
            self.instances[i].second_garp_burst = None;
            if self.instances[i].machine.state() == State::Master {
                self.announce(i);
            }
        }
    }

    /// The machine's advert, on the instance's link and every heartbeat
    /// link that is up: only the IP addresses (and so the checksum) differ.
    pub(super) fn send_advert(&mut self, i: usize, advert: &Advert) {
        let instance = &mut self.instances[i];
        let priority = advert.priority;
        let main = instance
            .destinations
            .iter()
            .map(|d| (&instance.socket, instance.primary, *d));
        let heartbeats = instance
            .heartbeats
            .iter()
            .filter(|h| h.link_up)
            .map(|h| (&h.socket, h.local, h.peer));
        for (socket, source, destination) in main.chain(heartbeats) {
            let message = match advert.encode(source, destination, ChecksumMode::WithPseudoHeader) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(instance = %instance.config.name, "cannot encode our advert: {e}");
                    return;
                }
            };
            match socket.send(&message, destination) {
                Ok(()) => {
                    instance.adverts_sent += 1;
                    if priority == 0 {
                        instance.priority_zero_sent += 1;
                    }
                }
                Err(e) => {
                    tracing::warn!(instance = %instance.config.name, %destination, "sending an advert failed: {e}")
                }
            }
        }
    }
}
