//! The link state of the peer interfaces, as the kernel announces it
//! (rtnetlink RTMGRP_LINK multicast): the engine polls nothing, it is told.
//!
//! Owns: that socket and reading its link messages (netlink-packet-route
//! decodes them). Must not: decide what a link change means (the state
//! machine's `interface_down`/`interface_up` do).

use std::{
    io,
    os::fd::{AsRawFd, RawFd},
};

use rtnetlink::{
    constants::RTMGRP_LINK,
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{
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
        socket.bind(&SocketAddr::new(0, RTMGRP_LINK))?;
        socket.set_non_blocking(true)?;
        Ok(Self { socket })
    }

    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// Every link change the kernel announced since last time, and whether
    /// some announcements were lost (the socket's queue overflowed:
    /// ENOBUFS), in which case the caller must look again.
    pub fn drain(&self) -> (Vec<LinkChange>, bool) {
        let mut changes = Vec::new();
        let mut lost = false;
        let mut datagram = Vec::with_capacity(16 * 1024);
        loop {
            datagram.clear();
            match self.socket.recv(&mut datagram, 0) {
                Ok(0) => return (changes, lost),
                Ok(_) => changes.extend(link_changes(&datagram)),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    tracing::warn!(
                        "link notifications were lost (queue overflow): reading every link again"
                    );
                    lost = true;
                }
                Err(_) => return (changes, lost),
            }
        }
    }
}

/// The link messages of one datagram (several netlink messages, each
/// padded to 4 bytes). One that does not decode ends the datagram: what
/// follows it cannot be framed.
fn link_changes(mut datagram: &[u8]) -> Vec<LinkChange> {
    let mut changes = Vec::new();
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
                changes.push(LinkChange::from_message(&link, false))
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                changes.push(LinkChange::from_message(&link, true))
            }
            _ => {}
        }
        let length = message.header.length as usize;
        if length == 0 {
            break;
        }
        datagram = &datagram[length.next_multiple_of(4).min(datagram.len())..];
    }
    changes
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
        let inner = if new {
            RouteNetlinkMessage::NewLink(link)
        } else {
            RouteNetlinkMessage::DelLink(link)
        };
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
}
