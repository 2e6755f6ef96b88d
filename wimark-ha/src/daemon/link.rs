//! The link state of the peer interfaces and the addresses on them, as the
//! kernel announces them (rtnetlink RTMGRP_LINK and RTMGRP_IPV4/6_IFADDR
//! multicast): the engine polls nothing, it is told.
//!
//! Owns: that socket and reading its link and address messages
//! (netlink-packet-route decodes them). Must not: decide what a change
//! means (the state machine's `interface_down`/`interface_up`,
//! `vip_removed`/`vip_appeared` do).

use std::{
    io,
    os::fd::{AsRawFd, RawFd},
};

use rtnetlink::{
    constants::{RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK},
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{
        address::AddressMessage,
        link::{LinkAttribute, LinkFlags, LinkMessage},
        RouteNetlinkMessage,
    },
    sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr},
};

pub struct LinkWatcher {
    socket: Socket,
}

/// One link as the kernel announced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkChange {
    pub index: u32,
    /// Its name, as the message carries it (a tracked link removed and
    /// created again is known by name: its index is new).
    pub name: Option<String>,
    pub usable: bool,
    /// RTM_DELLINK: the index is gone.
    pub removed: bool,
}

/// An address added to or removed from a link, as the kernel announced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressChange {
    pub index: u32,
    pub address: std::net::IpAddr,
    /// RTM_NEWADDR (added, or its flags changed): on the link now.
    pub present: bool,
}

impl AddressChange {
    fn from_message(message: &AddressMessage, present: bool) -> Option<Self> {
        use rtnetlink::packet_route::address::AddressHeaderFlags;
        // An IPv6 address still in duplicate address detection (or failed
        // it) cannot be sent from: not there yet. Its next RTM_NEWADDR, when
        // DAD is done, says it is.
        let unusable = AddressHeaderFlags::Tentative | AddressHeaderFlags::Dadfailed;
        Some(Self {
            index: message.header.index,
            address: crate::vip::message_address(message)?,
            present: present && !message.header.flags.intersects(unusable),
        })
    }
}

/// What one drain of the socket read: link changes in order, and for each
/// (link, address) only the last word (an address removed and added back
/// within one drain was never missing), and whether some announcements were
/// lost (the socket's queue overflowed: ENOBUFS), in which case the caller
/// must look again.
#[derive(Debug, Default)]
pub struct Changes {
    pub links: Vec<LinkChange>,
    pub addresses: Vec<AddressChange>,
    pub lost: bool,
}

impl Changes {
    fn add_address(&mut self, change: AddressChange) {
        self.addresses
            .retain(|c| (c.index, c.address) != (change.index, change.address));
        self.addresses.push(change);
    }
}

impl LinkChange {
    /// A link read now rather than announced.
    pub fn read(index: u32, name: &str, usable: bool) -> Self {
        Self {
            index,
            name: Some(name.to_string()),
            usable,
            removed: false,
        }
    }

    fn from_message(link: &LinkMessage, removed: bool) -> Self {
        let name = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(name) => Some(name.clone()),
            _ => None,
        });
        Self {
            index: link.header.index,
            name,
            usable: !removed && usable(link.header.flags),
            removed,
        }
    }
}

/// Up and carrying: administratively up and with a link (carrier).
fn usable(flags: LinkFlags) -> bool {
    flags.contains(LinkFlags::Up) && flags.intersects(LinkFlags::LowerUp | LinkFlags::Running)
}

impl LinkWatcher {
    pub fn new() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind(&SocketAddr::new(
            0,
            RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR,
        ))?;
        socket.set_non_blocking(true)?;
        Ok(Self { socket })
    }

    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Every link and address change the kernel announced since last time.
    pub fn drain(&self) -> Changes {
        let mut changes = Changes::default();
        let mut datagram = Vec::with_capacity(16 * 1024);
        loop {
            datagram.clear();
            match self.socket.recv(&mut datagram, 0) {
                Ok(0) => return changes,
                Ok(_) => read_datagram(&datagram, &mut changes),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    tracing::warn!(
                        "link notifications were lost (queue overflow): reading every link and VIP again"
                    );
                    changes.lost = true;
                }
                Err(_) => return changes,
            }
        }
    }
}

/// The link and address messages of one datagram (several netlink
/// messages, each padded to 4 bytes). One that does not decode ends the
/// datagram: what follows it cannot be framed.
fn read_datagram(mut datagram: &[u8], changes: &mut Changes) {
    while !datagram.is_empty() {
        let message = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(datagram) {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!("undecodable link notification skipped: {e}");
                break;
            }
        };
        match message.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                changes.links.push(LinkChange::from_message(&link, false))
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                changes.links.push(LinkChange::from_message(&link, true))
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(address)) => {
                changes.add_address_message(&address, true)
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(address)) => {
                changes.add_address_message(&address, false)
            }
            _ => {}
        }
        let length = message.header.length as usize;
        if length == 0 {
            break;
        }
        datagram = &datagram[length.next_multiple_of(4).min(datagram.len())..];
    }
}

impl Changes {
    fn add_address_message(&mut self, message: &AddressMessage, present: bool) {
        if let Some(change) = AddressChange::from_message(message, present) {
            self.add_address(change);
        }
    }
}

#[cfg(test)]
fn link_changes(datagram: &[u8]) -> Vec<LinkChange> {
    let mut changes = Changes::default();
    read_datagram(datagram, &mut changes);
    changes.links
}

/// Whether `interface` is up and has a link right now (getifaddrs: the
/// kernel's link flags, IFF_LOWER_UP included).
pub fn link_usable(interface: &str) -> io::Result<bool> {
    let flags = nix::ifaddrs::getifaddrs()?
        .find(|i| i.interface_name == interface)
        .map(|i| i.flags)
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("no interface {interface}"))
        })?;
    Ok(usable(LinkFlags::from_bits_retain(flags.bits() as u32)))
}

#[cfg(test)]
mod tests {
    use rtnetlink::{
        packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload},
        packet_route::{
            link::{LinkAttribute, LinkFlags, LinkMessage},
            RouteNetlinkMessage,
        },
    };

    use super::{link_changes, LinkChange};

    fn message(new: bool, index: u32, flags: LinkFlags) -> Vec<u8> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.header.flags = flags;
        link.attributes.push(LinkAttribute::IfName(format!("eth{index}")));
        datagram(if new {
            RouteNetlinkMessage::NewLink(link)
        } else {
            RouteNetlinkMessage::DelLink(link)
        })
    }

    /// One netlink message as the kernel would frame it.
    fn datagram(inner: RouteNetlinkMessage) -> Vec<u8> {
        let mut message = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(inner),
        );
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        bytes
    }

    #[test]
    fn a_datagram_of_link_messages_becomes_link_changes() {
        let up = LinkFlags::Up | LinkFlags::LowerUp | LinkFlags::Running;
        let mut datagram = message(true, 3, up);
        datagram.extend(message(true, 4, LinkFlags::Up)); // no carrier
        datagram.extend(message(false, 5, up)); // removed
        datagram.extend(message(true, 6, LinkFlags::LowerUp)); // admin down
        let seen = |c: &LinkChange| (c.index, c.name.clone().unwrap_or_default(), c.usable, c.removed);
        assert_eq!(
            link_changes(&datagram).iter().map(seen).collect::<Vec<_>>(),
            [
                (3, "eth3".to_string(), true, false),
                (4, "eth4".to_string(), false, false),
                (5, "eth5".to_string(), false, true),
                (6, "eth6".to_string(), false, false)
            ]
        );
        // A torn tail is dropped; what came before it stands.
        let mut torn = message(true, 3, up);
        torn.extend(&message(true, 4, up)[..10]);
        assert_eq!(link_changes(&torn).iter().map(seen).collect::<Vec<_>>(), [(3, "eth3".to_string(), true, false)]);
        assert!(link_changes(&[0xff; 7]).is_empty());
    }

    fn address_message(new: bool, index: u32, address: &str) -> Vec<u8> {
        address_message_with(new, index, address, false)
    }

    /// With `tentative`: an IPv6 address still in duplicate address detection.
    fn address_message_with(new: bool, index: u32, address: &str, tentative: bool) -> Vec<u8> {
        use rtnetlink::packet_route::address::{
            AddressAttribute, AddressHeaderFlags, AddressMessage,
        };
        let mut message = AddressMessage::default();
        if tentative {
            message.header.flags = AddressHeaderFlags::Tentative;
        }
        message.header.index = index;
        message.header.prefix_len = 24;
        message
            .attributes
            .push(AddressAttribute::Address(address.parse().expect("ip")));
        datagram(if new {
            RouteNetlinkMessage::NewAddress(message)
        } else {
            RouteNetlinkMessage::DelAddress(message)
        })
    }

    #[test]
    fn address_messages_keep_the_last_word_per_link_and_address() {
        let mut datagram = address_message(false, 3, "10.77.0.100");
        datagram.extend(address_message(false, 4, "10.77.0.100"));
        datagram.extend(message(true, 3, LinkFlags::Up));
        datagram.extend(address_message(true, 3, "10.77.0.100"));
        datagram.extend(address_message(false, 3, "fd00::64"));
        datagram.extend(address_message_with(true, 5, "fe80::1", true));
        let mut changes = super::Changes::default();
        super::read_datagram(&datagram, &mut changes);
        let seen: Vec<_> = changes
            .addresses
            .iter()
            .map(|c| (c.index, c.address.to_string(), c.present))
            .collect();
        assert_eq!(
            seen,
            [
                (4, "10.77.0.100".to_string(), false),
                (3, "10.77.0.100".to_string(), true),
                (3, "fd00::64".to_string(), false),
                (5, "fe80::1".to_string(), false)
            ]
        );
        assert_eq!(changes.links.len(), 1);
    }
}
