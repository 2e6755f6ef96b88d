//! What the kernel says of our VIPs. A master owns its VIPs (RFC 5798
//! §6.4.3: it "MUST respond to ARP requests for the IPvX address(es)
//! associated with the virtual router"); another daemon (NetworkManager,
//! systemd-networkd reapplying a `.network` file, an operator's `ip addr
//! flush`) may remove an address it does not know, or add one. The runtime
//! reports each such change; this decides what to do about it: a master
//! puts a lost VIP back and announces it again, a router that must not hold
//! a VIP removes it, and a VIP the runtime cannot put back is FAULT, which
//! resigns so that the peer takes over.

use super::*;

/// How long a VIP that could not be added holds the instance in FAULT
/// before it starts over as BACKUP (RFC 5798 §6.4.1) and may try again: by
/// then the peer holds the VIP, and a master heard keeps it.
pub const VIP_FAULT_HOLD: Duration = Duration::from_secs(1);

impl Instance {
    /// Whether the VIPs must be on the interface now: as master, and while
    /// a master that handed over keeps answering until the new master
    /// speaks.
    pub fn holds_vips(&self) -> bool {
        self.state == State::Master || self.release_vips_on_new_master
    }

    /// The kernel says `address` left the interface. One of our VIPs that
    /// we must hold is put back at once and announced again. The address
    /// owner's VIPs are the interface's own addresses, which are the
    /// operator's to remove.
    pub fn vip_removed(&mut self, _now: Timestamp, address: IpAddr) {
        if !self.params.virtual_ips.contains(&address)
            || !self.holds_vips()
            || self.params.priority == 255
        {
            return;
        }
        self.actions.push_back(Action::RestoreVirtualIp(address));
    }

    /// The kernel says `address` appeared on the interface. One of our VIPs
    /// that we must not hold (someone added it on a backup) is removed:
    /// two servers answering for it split the APs between them. The address
    /// owner's own address stays whatever our state.
    pub fn vip_appeared(&mut self, _now: Timestamp, address: IpAddr) {
        if !self.params.virtual_ips.contains(&address)
            || self.holds_vips()
            || self.params.priority == 255
            || self.state == State::Initialize
        {
            return;
        }
        self.actions
            .push_back(Action::RemoveStrayVirtualIp(address));
    }

    /// The runtime could not add a VIP we must hold (at a takeover or when
    /// putting it back): a master that cannot answer for its VIPs is no
    /// master. FAULT, which resigns (priority 0) so that the peer takes
    /// over at once, for [`VIP_FAULT_HOLD`]; then it starts over as BACKUP.
    pub fn vip_add_failed(&mut self, now: Timestamp, address: IpAddr) {
        if !self.params.virtual_ips.contains(&address) || !self.holds_vips() {
            return;
        }
        self.vip_fault_until = Some(now + VIP_FAULT_HOLD);
        self.enter_fault(Reason::VipNotAdded);
    }

    /// The kernel says the address our adverts are sent from (the
    /// tie-break of RFC 5798 §6.4.3 and the source a peer's allow-list
    /// knows) left the interface, or came back. Without it we cannot speak
    /// as ourselves: FAULT (resigning, if master) until it is back, then
    /// start over (RFC 5798 §6.4.1). It is the operator's address: we do not
    /// put it back.
    pub fn source_address_present(&mut self, now: Timestamp, present: bool) {
        if self.source_address_gone != present {
            return;
        }
        self.source_address_gone = !present;
        if present {
            self.leave_fault(now, Reason::SourceAddressBack);
        } else {
            self.enter_fault(Reason::SourceAddressGone);
        }
    }

    /// [`VIP_FAULT_HOLD`] passed: start over (RFC 5798 §6.4.1) unless
    /// something else holds us in FAULT.
    pub(super) fn vip_fault_timeout(&mut self, now: Timestamp) {
        if self.vip_fault_until.is_some_and(|d| now >= d) {
            self.vip_fault_until = None;
            self.leave_fault(now, Reason::VipRetry);
        }
    }
}
