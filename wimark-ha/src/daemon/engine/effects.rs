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
            if !matches!(action, Action::SendAdvert(_) | Action::Heartbeat(_)) {
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
                Action::Heartbeat(order) => self.heartbeat(i, order, decided),
                Action::FalseTakeover { peer, gap, window } => {
                    self.false_takeover(i, peer, gap, window)
                }
                Action::RemoveVirtualIps => {
                    self.remove_vips(i);
                    self.instances[i].second_garp_burst = None;
                }
                Action::RestoreVirtualIp(address) => self.restore_vip(i, address),
                Action::RemoveStrayVirtualIp(address) => self.remove_stray_vip(i, address),
                Action::Transition {
                    from,
                    to,
                    reason,
                    silence,
                } => {
                    let cause = self.transition_cause(i, from, to, reason);
                    let group = self
                        .sync_group_of(i)
                        .map(|g| (g.name.clone(), g.members.first() == Some(&i)));
                    let instance = &mut self.instances[i];
                    let us = |d: Duration| d.as_micros() as u64;
                    tracing::info!(
                        instance = %instance.config.name,
                        %from,
                        %to,
                        %reason,
                        cause = cause.as_deref(),
                        priority = instance.machine.priority(),
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
                        // keepalived's notify gets the priority in force.
                        priority: instance.machine.priority(),
                        reason,
                        group,
                    });
                    let record = TransitionRecord {
                        at_unix_ms: unix_ms(),
                        from,
                        to,
                        reason,
                        silence,
                        vip_added,
                        garp_sent,
                        cause,
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
        self.follow_sync_group(i, decided);
    }

    pub(super) fn add_vips(&mut self, i: usize) {
        let instance = &mut self.instances[i];
        if instance.config.is_address_owner() {
            // The interface's own addresses: already there.
            instance.holds_vips = true;
            return;
        }
        let mut failures = Vec::new();
        let mut failed = None;
        for vip in &instance.config.virtual_ips {
            if let Err(e) = self
                .runtime
                .block_on(self.vips.add(instance.interface.index, *vip))
            {
                tracing::error!(instance = %instance.config.name, %vip, "adding the VIP failed: {e}; giving mastership up");
                failures.push(format!("{vip}: {e}"));
                failed = failed.or(Some(vip.address));
            }
        }
        instance.holds_vips = true;
        instance.vips_missing.clear();
        instance.fault =
            (!failures.is_empty()).then(|| format!("VIP not added: {}", failures.join("; ")));
        // The machine decides what a master without its VIP is (FAULT).
        if let Some(address) = failed {
            instance.machine.vip_add_failed(now(), address);
        }
    }

    pub(super) fn remove_vips(&mut self, i: usize) {
        let instance = &mut self.instances[i];
        if instance.config.is_address_owner() {
            // RFC 5798's owner: the VIPs are this interface's addresses,
            // which demotion or exit must not take away.
            tracing::info!(instance = %instance.config.name, "address owner: its VIPs stay on the interface (they are its own addresses)");
            return;
        }
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
        instance.vips_missing.clear();
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

    /// The machine's advert as it goes out on the instance's link and every
    /// heartbeat link that is up: only the IP addresses (and so the
    /// checksum) differ.
    fn messages(&self, i: usize, advert: &Advert) -> Vec<Message> {
        let instance = &self.instances[i];
        // No carrier, no advert: the kernel would hold a unicast one until
        // the link returns and send it then, late (see forget_peers_on).
        let main = instance
            .destinations
            .iter()
            .filter(|_| instance.link_up)
            .map(|d| (&instance.socket, instance.primary, *d));
        let heartbeats = instance
            .heartbeats
            .iter()
            .filter(|h| h.link_up)
            .map(|h| (&h.socket, h.local, h.peer));
        let mut messages = Vec::new();
        for (socket, source, destination) in main.chain(heartbeats) {
            match advert.encode(source, destination, ChecksumMode::WithPseudoHeader) {
                Ok(bytes) => messages.push(Message {
                    socket: socket.clone(),
                    destination,
                    bytes: bytes.freeze(),
                }),
                Err(e) => {
                    tracing::error!(instance = %instance.config.name, "cannot encode our advert: {e}")
                }
            }
        }
        messages
    }

    /// Sends the machine's advert now, from this thread.
    pub(super) fn send_advert(&mut self, i: usize, advert: &Advert) {
        let messages = self.messages(i, advert);
        let instance = &mut self.instances[i];
        for message in messages {
            match message.socket.send(&message.bytes, message.destination) {
                Ok(()) => {
                    instance.adverts_sent += 1;
                    instance.last_advert_sent_at = Some(now());
                    if advert.priority == 0 {
                        instance.priority_zero_sent += 1;
                    }
                }
                Err(e) => {
                    tracing::warn!(instance = %instance.config.name, destination = %message.destination, "sending an advert failed: {e}")
                }
            }
        }
    }

    /// The machine's standing order for the fast stream: the senders start
    /// it, keep it (a renewal) or stop it.
    fn heartbeat(&mut self, i: usize, order: Heartbeat, decided: Timestamp) {
        let Some(senders) = self.senders.as_ref() else {
            return;
        };
        match order {
            Heartbeat::Send {
                advert,
                every,
                until,
            } => {
                let same = self.instances[i]
                    .stream
                    .as_ref()
                    .is_some_and(|(a, e)| *a == advert && *e == every);
                if same && senders.renew(i, until) {
                    return;
                }
                if same {
                    // The lease ran out before this renewal: the engine
                    // stalled longer than the lease, and the peer may
                    // have taken over meanwhile (its adverts will tell).
                    let counters = &self.instances[i].stream_counters;
                    let last_sent = counters.last_sent_ns.load(std::sync::atomic::Ordering::Relaxed);
                    counters.lease_gap(last_sent, decided.0, every);
                    tracing::warn!(
                        instance = %self.instances[i].config.name,
                        silent_us = decided.0.saturating_sub(last_sent) / 1000,
                        "fast advert stream restarted: its lease ran out before the engine renewed it"
                    );
                }
                senders.start_stream(i, self.stream(i, &advert, every, until, decided));
                self.instances[i].stream = Some((advert, every));
            }
            Heartbeat::Stop => {
                senders.stop(i);
                self.instances[i].stream = None;
            }
        }
    }

    /// A heartbeat link went up or down: the running stream goes out on
    /// the links that are up now.
    pub(super) fn restream(&mut self, i: usize, t: Timestamp) {
        let (Some(senders), Some((advert, every))) =
            (self.senders.as_ref(), self.instances[i].stream.clone())
        else {
            return;
        };
        let until = t + crate::vrrp::HEARTBEAT_LEASE_INTERVALS
            * self.instances[i].config.advert_interval;
        senders.start_stream(i, self.stream(i, &advert, every, until, t));
    }

    /// The machine's advert as a stream for the senders, on the links that
    /// are up now, its turns counted from `origin`.
    fn stream(
        &self,
        i: usize,
        advert: &Advert,
        every: Duration,
        until: Timestamp,
        origin: Timestamp,
    ) -> Stream {
        Stream {
            messages: self.messages(i, advert),
            every,
            until,
            origin,
            counters: self.instances[i].stream_counters.clone(),
            last_turn_ns: std::sync::atomic::AtomicU64::new(origin.0),
        }
    }

    fn false_takeover(&mut self, i: usize, peer: std::net::IpAddr, gap: Duration, window: Duration) {
        let instance = &mut self.instances[i];
        instance.false_takeovers += 1;
        self.status_changed = true;
        let window_after = instance.machine.detection().and_then(|d| d.window);
        tracing::warn!(
            instance = %instance.config.name,
            %peer,
            gap_us = gap.as_micros() as u64,
            window_us = window.as_micros() as u64,
            window_after_us = window_after.map(|w| w.as_micros() as u64),
            "false takeover: the master declared down spoke again (late, not dead); the detection window is too tight for this host"
        );
        let _ = self.observer.send(crate::daemon::observer::Observed::Entry(
            crate::history::Entry::FalseTakeover {
                instance: instance.config.name.clone(),
                at_unix_ms: unix_ms(),
                peer,
                gap: Some(gap),
                window: Some(window),
                window_after,
            },
        ));
    }
}
