//! The kernel's word on the links and addresses the instances use (the
//! engine's netlink socket, see `daemon/link.rs`): carrier changes to the
//! machines, heartbeat paths and trackers, address changes to `vips.rs`, and
//! what a carrier loss leaves queued in the kernel discarded.
//!
//! Owns: dispatching those changes and the neighbour purge. Must not: decide
//! what a change means (the machines do).

use super::*;
use crate::daemon::link::LinkChange;

impl Engine {
    /// Everything the netlink socket announced since the last turn; after
    /// lost announcements, every link and address read again.
    pub(super) fn kernel_changes(&mut self, t: Timestamp) {
        let changes = self.links.drain();
        let mut link_changes = changes.links;
        if changes.lost {
            link_changes.extend(self.every_link_now());
        }
        for change in link_changes {
            self.link_changed(&change, t);
        }
        for change in self.sources_first(changes.addresses) {
            self.address_changed(change, t);
        }
        if changes.lost {
            self.every_vip_now(t);
        }
    }

    /// One link's carrier changed: every instance that speaks, listens or
    /// tracks on it hears of it.
    fn link_changed(&mut self, change: &LinkChange, t: Timestamp) {
        let (index, usable) = (change.index, change.usable);
        for i in 0..self.instances.len() {
            // A heartbeat link going down costs a path, not the
            // instance: the others still carry the adverts.
            let instance = &mut self.instances[i];
            let mut paths_changed = false;
            for path in &mut instance.heartbeats {
                if path.interface.index == index && path.link_up != usable {
                    path.link_up = usable;
                    paths_changed = true;
                    self.status_changed = true;
                    tracing::warn!(
                        instance = %instance.config.name,
                        link = %path.interface.name,
                        "heartbeat link {}",
                        if usable { "up" } else { "down" }
                    );
                }
            }
            if paths_changed {
                self.restream(i, t);
                if !usable {
                    self.forget_peers_on(i, index);
                }
            }
            // The instance's own link first (the fast path), then
            // its trackers.
            if self.instances[i].interface.index == index {
                self.instances[i].link_up = usable;
                if usable {
                    self.instances[i].machine.interface_up(t);
                } else {
                    self.instances[i].machine.interface_down(t);
                }
                self.carry_out(i, t);
                if !usable {
                    self.forget_peers_on(i, index);
                }
            }
            self.track_link(i, change, t);
        }
    }

    /// A link of instance `i` lost its carrier (its stream is stopped by
    /// now): adverts sent to a unicast peer on it since are held by the
    /// kernel until the peer's address resolves — after the link returns,
    /// perhaps after this process died — so they are discarded now. An
    /// advert that cannot leave when it was meant to must never leave later.
    fn forget_peers_on(&mut self, i: usize, index: u32) {
        let instance = &self.instances[i];
        let mut peers: Vec<IpAddr> = Vec::new();
        if instance.interface.index == index && !instance.config.unicast_peers.is_empty() {
            peers.extend(&instance.destinations);
        }
        peers.extend(
            instance
                .heartbeats
                .iter()
                .filter(|h| h.interface.index == index)
                .map(|h| h.peer),
        );
        if peers.is_empty() {
            return;
        }
        if let Err(e) = self
            .runtime
            .block_on(self.vips.forget_neighbours(index, &peers))
        {
            tracing::warn!(instance = %instance.config.name, "could not discard what the kernel holds for the peers on a link without carrier: {e}");
        }
    }

    /// Every link the instances use or track, read now: after lost
    /// notifications. Idempotent for the links that did not change.
    fn every_link_now(&self) -> Vec<LinkChange> {
        let interfaces = self.instances.iter().flat_map(|i| {
            std::iter::once(&i.interface).chain(i.heartbeats.iter().map(|h| &h.interface))
        });
        let mut links: Vec<LinkChange> = interfaces
            .filter_map(|interface| {
                crate::daemon::link::link_usable(&interface.name)
                    .ok()
                    .map(|usable| LinkChange::read(interface.index, &interface.name, usable))
            })
            .collect();
        links.extend(self.tracked_links_now());
        links
    }
}
