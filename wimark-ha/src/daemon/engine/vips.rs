//! The kernel's word on the instances' VIPs and advert source addresses
//! (address events) and carrying out what the machine decides of it: a VIP
//! put back and announced, a stray one removed, a failed add reported back
//! to the machine, a source address gone told to it.
//!
//! Owns: which addresses the kernel says are missing, the restore counter
//! and the one log line per restore. Must not: decide whether a VIP should
//! be on the interface (the machine's `vip_removed`/`vip_appeared` do).

use super::*;
use crate::daemon::link::AddressChange;

impl Engine {
    /// An address came or went on some link: the instances whose VIP it is
    /// on that link hear of it.
    pub(super) fn address_changed(&mut self, change: AddressChange, t: Timestamp) {
        for i in 0..self.instances.len() {
            let instance = &mut self.instances[i];
            if instance.interface.index == change.index && instance.primary == change.address {
                if !change.present {
                    tracing::warn!(
                        instance = %instance.config.name,
                        interface = %instance.interface.name,
                        address = %change.address,
                        "the address the adverts are sent from was removed from the interface"
                    );
                }
                instance.machine.source_address_present(t, change.present);
                self.status_changed = true;
                self.carry_out(i, t);
                continue;
            }
            if instance.interface.index != change.index
                || instance.config.virtual_ip(change.address).is_none()
            {
                continue;
            }
            if change.present {
                instance.vips_missing.retain(|(a, _)| *a != change.address);
                instance.machine.vip_appeared(t, change.address);
            } else {
                if instance.holds_vips
                    && !instance
                        .vips_missing
                        .iter()
                        .any(|(a, _)| *a == change.address)
                {
                    instance.vips_missing.push((change.address, t));
                }
                instance.machine.vip_removed(t, change.address);
            }
            self.status_changed = true;
            self.carry_out(i, t);
        }
    }

    /// A batch of address changes with the instances' source addresses
    /// first: removing a server's own address makes Linux remove the VIPs of
    /// its subnet first, and a master told of the VIP alone would put it
    /// back only to give it up a moment later, when told of its own address.
    pub(super) fn sources_first(&self, mut changes: Vec<AddressChange>) -> Vec<AddressChange> {
        let is_source = |c: &AddressChange| {
            self.instances
                .iter()
                .any(|i| i.interface.index == c.index && i.primary == c.address)
        };
        // A stable sort: each kind keeps the kernel's order.
        changes.sort_by_key(|c| !is_source(c));
        changes
    }

    /// After lost address notifications: every instance's VIPs and source
    /// address read now, each told as if announced.
    pub(super) fn every_vip_now(&mut self, t: Timestamp) {
        let mut changes = Vec::new();
        for instance in &self.instances {
            let index = instance.interface.index;
            let Ok(present) = self.runtime.block_on(self.vips.addresses(index)) else {
                continue;
            };
            let ours = instance.config.virtual_ips.iter().map(|v| v.address);
            for address in ours.chain(std::iter::once(instance.primary)) {
                changes.push(AddressChange {
                    index,
                    address,
                    present: present.iter().any(|p| p.address == address),
                });
            }
        }
        for change in changes {
            self.address_changed(change, t);
        }
    }

    /// The machine's `RestoreVirtualIp`: the VIP back on the interface and
    /// announced, counted and said once; a failed add goes back to the
    /// machine (FAULT).
    pub(super) fn restore_vip(&mut self, i: usize, address: IpAddr) {
        let instance = &mut self.instances[i];
        let Some(vip) = instance.config.virtual_ip(address) else {
            return;
        };
        match self
            .runtime
            .block_on(self.vips.add(instance.interface.index, vip))
        {
            Ok(()) => {
                for _ in 0..instance.config.garp.repeat {
                    if let Err(e) = instance.announcer.announce(address) {
                        tracing::warn!(instance = %instance.config.name, %vip, "gratuitous ARP/NA failed: {e}");
                    }
                }
                let restored_at = now();
                let lost_at = instance
                    .vips_missing
                    .iter()
                    .find(|(a, _)| *a == address)
                    .map(|(_, at)| *at);
                instance.vips_missing.retain(|(a, _)| *a != address);
                instance.vips_restored += 1;
                tracing::warn!(
                    instance = %instance.config.name,
                    interface = %instance.interface.name,
                    %vip,
                    gone_us = lost_at.map(|at| restored_at.saturating_since(at).as_micros() as u64),
                    restored = instance.vips_restored,
                    "VIP removed by someone else: put back and announced"
                );
            }
            Err(e) => {
                tracing::error!(instance = %instance.config.name, %vip, "putting the VIP back failed: {e}; giving mastership up");
                instance.fault = Some(format!("VIP {vip} not added back: {e}"));
                instance.machine.vip_add_failed(now(), address);
            }
        }
    }

    /// The machine's `RemoveStrayVirtualIp`: a VIP someone added while we
    /// must not hold it.
    pub(super) fn remove_stray_vip(&mut self, i: usize, address: IpAddr) {
        let instance = &mut self.instances[i];
        let Some(vip) = instance.config.virtual_ip(address) else {
            return;
        };
        match self
            .runtime
            .block_on(self.vips.remove(instance.interface.index, vip))
        {
            Ok(true) => tracing::warn!(
                instance = %instance.config.name,
                interface = %instance.interface.name,
                %vip,
                state = %instance.machine.state(),
                "VIP added by someone else while this node must not hold it: removed"
            ),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(instance = %instance.config.name, %vip, "removing a VIP someone else added failed: {e}");
                instance.fault = Some(format!("VIP {vip} added by someone else, not removed: {e}"));
            }
        }
    }
}
