//! Whether an advert the XDP program saw was addressed to this host.
//!
//! XDP runs before the kernel's own receive checks, so it also sees frames
//! for other hosts: a switch flooding unknown unicast, a port mirror, a
//! neighbour sending to someone else's MAC or IP. The kernel would never
//! deliver those to a VRRP socket; neither do we. Obeyed are adverts to a
//! group or broadcast MAC or to our own, and to the VRRP group address or
//! an address of this host (unicast peers).
//!
//! Owns: that decision and the cache of our addresses it rests on. Must
//! not: look at the advert's content (the state machine does).

use std::{
    net::{IpAddr, SocketAddr, SocketAddrV6, UdpSocket},
    time::Duration,
};

use super::super::advert_socket::{VRRP_GROUP_V4, VRRP_GROUP_V6};
use crate::{records::IgnoredReason, vrrp::Timestamp};

/// The judgement without I/O: `is_local` answers whether an address is one
/// of this host's.
pub fn addressed_here(
    destination: IpAddr,
    destination_mac: [u8; 6],
    our_mac: [u8; 6],
    is_local: impl FnOnce(IpAddr) -> bool,
) -> Result<(), IgnoredReason> {
    // The group bit covers multicast and broadcast; anything else must be
    // our own MAC, as the kernel's PACKET_OTHERHOST check has it.
    let group_mac = destination_mac[0] & 1 == 1;
    if !group_mac && destination_mac != our_mac {
        return Err(IgnoredReason::ForeignMac);
    }
    let group = match destination {
        IpAddr::V4(a) => a == VRRP_GROUP_V4,
        IpAddr::V6(a) => a == VRRP_GROUP_V6,
    };
    if group {
        return Ok(());
    }
    // Another multicast group is nobody's VRRP; a unicast address must be
    // ours (a unicast peer's advert).
    if !destination.is_multicast() && is_local(destination) {
        Ok(())
    } else {
        Err(IgnoredReason::ForeignAddress)
    }
}

/// How long an address found to be ours is believed without asking again.
const LOCAL_FOR: Duration = Duration::from_secs(1);
/// Addresses remembered (a host has a handful; forged ones are not kept).
const REMEMBERED: usize = 16;

/// This host's addresses as unicast adverts reach them, asked of the kernel
/// itself: an address is ours if a socket can bind to it. Positive answers
/// are remembered for [`LOCAL_FOR`], so a unicast peer's stream costs one
/// bind a second; an address added at run time is found at once.
#[derive(Default)]
pub struct LocalAddresses {
    known: Vec<(IpAddr, Timestamp)>,
}

impl LocalAddresses {
    /// Whether `address` is this host's now. `scope` is the interface index
    /// the advert came in on (for an IPv6 link-local address).
    pub fn is_local(&mut self, address: IpAddr, scope: u32, now: Timestamp) -> bool {
        let fresh = Timestamp(now.0.saturating_sub(LOCAL_FOR.as_nanos() as u64));
        self.known.retain(|(_, at)| *at >= fresh);
        if self.known.iter().any(|(a, _)| *a == address) {
            return true;
        }
        let bind_to = match address {
            IpAddr::V4(_) => SocketAddr::new(address, 0),
            IpAddr::V6(a) => SocketAddr::V6(SocketAddrV6::new(a, 0, 0, scope)),
        };
        let local = UdpSocket::bind(bind_to).is_ok();
        if local {
            if self.known.len() == REMEMBERED {
                self.known.remove(0);
            }
            self.known.push((address, now));
        }
        local
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const OURS: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
    const GROUP_MAC: [u8; 6] = [0x01, 0, 0x5e, 0, 0, 0x12];
    const OTHER_HOST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
    const GROUP: IpAddr = IpAddr::V4(VRRP_GROUP_V4);
    const US: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 2));
    const SOMEONE: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 3));

    fn is_us(a: IpAddr) -> bool {
        a == US
    }

    #[test]
    fn the_group_and_our_own_addresses_are_obeyed() {
        assert_eq!(addressed_here(GROUP, GROUP_MAC, OURS, is_us), Ok(()));
        assert_eq!(
            addressed_here(GROUP, [0xff; 6], OURS, is_us),
            Ok(()),
            "broadcast"
        );
        assert_eq!(
            addressed_here(US, OURS, OURS, is_us),
            Ok(()),
            "unicast peer"
        );
        assert_eq!(
            addressed_here(
                IpAddr::V6(VRRP_GROUP_V6),
                [0x33, 0x33, 0, 0, 0, 0x12],
                OURS,
                |_| { false }
            ),
            Ok(())
        );
    }

    #[test]
    fn another_hosts_mac_or_address_is_not_obeyed() {
        assert_eq!(
            addressed_here(GROUP, OTHER_HOST, OURS, is_us),
            Err(IgnoredReason::ForeignMac)
        );
        assert_eq!(
            addressed_here(US, OTHER_HOST, OURS, is_us),
            Err(IgnoredReason::ForeignMac),
            "our IP in a frame for another host's MAC"
        );
        assert_eq!(
            addressed_here(SOMEONE, OURS, OURS, is_us),
            Err(IgnoredReason::ForeignAddress)
        );
        assert_eq!(
            addressed_here(
                IpAddr::V4(Ipv4Addr::new(224, 0, 0, 19)),
                GROUP_MAC,
                OURS,
                |_| { panic!("a multicast address is never asked about") }
            ),
            Err(IgnoredReason::ForeignAddress),
            "another group"
        );
    }

    #[test]
    fn loopback_is_ours_and_a_documentation_address_is_not() {
        let mut local = LocalAddresses::default();
        let t = Timestamp(5_000_000_000);
        assert!(local.is_local(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, t));
        assert!(!local.is_local(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77)), 0, t));
        assert_eq!(local.known.len(), 1, "only positive answers are kept");
        // Remembered within LOCAL_FOR, asked again after it.
        assert!(local.is_local(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, t));
        local.is_local(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            0,
            Timestamp(t.0 + 2_000_000_000),
        );
        assert_eq!(local.known[0].1, Timestamp(t.0 + 2_000_000_000));
    }
}
