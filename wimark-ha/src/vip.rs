//! Virtual IP ownership: the addresses on the interface (rtnetlink) and the
//! announcements that move the APs' ARP/ND caches to us (gratuitous ARP for
//! IPv4, unsolicited neighbour advertisements for IPv6).
//!
//! Owns: adding, removing and announcing VIPs, and what the interface looks
//! like (index, MAC, primary address). Must not: decide when — that is the
//! state machine's job.

use std::{
    io, mem,
    net::{IpAddr, Ipv6Addr},
};

use futures_util::TryStreamExt as _;
use rtnetlink::packet_route::{
    address::{AddressAttribute, AddressFlags, AddressMessage},
    link::LinkAttribute,
};
use wimark_ha_common::classify::internet_checksum;

use crate::config::VirtualIp;

#[derive(Debug, thiserror::Error)]
pub enum VipError {
    #[error("interface `{0}` does not exist")]
    NoSuchInterface(String),
    #[error("interface `{interface}` has no {family} address to send adverts from; add one (the VIP does not count)")]
    NoPrimaryAddress {
        interface: String,
        family: &'static str,
    },
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

fn netlink(e: impl std::fmt::Display) -> VipError {
    VipError::Netlink(e.to_string())
}

/// What the daemon needs to know about the peer interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    /// Addresses on it now, with prefix lengths.
    pub addresses: Vec<VirtualIp>,
}

impl InterfaceInfo {
    /// The primary address of `family` (v4 when `ipv4`): the first one that
    /// is not one of our VIPs. For IPv6, a link-local one, as RFC 5798 §5.1.2.1
    /// requires of the source.
    pub fn primary_address(&self, ipv4: bool, vips: &[VirtualIp]) -> Result<IpAddr, VipError> {
        self.addresses
            .iter()
            .map(|a| a.address)
            .filter(|a| !vips.iter().any(|v| v.address == *a))
            .find(|a| match a {
                IpAddr::V4(_) => ipv4,
                IpAddr::V6(v6) => !ipv4 && (v6.segments()[0] & 0xffc0) == 0xfe80,
            })
            .ok_or_else(|| VipError::NoPrimaryAddress {
                interface: self.name.clone(),
                family: if ipv4 { "IPv4" } else { "IPv6 link-local" },
            })
    }
}

/// Netlink handle for VIP work; cheap to clone.
#[derive(Clone)]
pub struct Vips {
    handle: rtnetlink::Handle,
}

impl Vips {
    /// Must be called inside a tokio runtime (the connection runs on it).
    pub fn connect() -> Result<Self, VipError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(netlink)?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    pub async fn interface(&self, name: &str) -> Result<InterfaceInfo, VipError> {
        let index = interface_index(name)?;
        let mut links = self.handle.link().get().match_index(index).execute();
        let mut mac = [0u8; 6];
        while let Some(link) = links.try_next().await.map_err(netlink)? {
            for attribute in link.attributes {
                if let LinkAttribute::Address(bytes) = attribute {
                    if bytes.len() == 6 {
                        mac.copy_from_slice(&bytes);
                    }
                }
            }
        }
        let addresses = self.addresses(index).await?;
        Ok(InterfaceInfo {
            name: name.to_string(),
            index,
            mac,
            addresses,
        })
    }

    pub async fn addresses(&self, index: u32) -> Result<Vec<VirtualIp>, VipError> {
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut out = Vec::new();
        while let Some(message) = stream.try_next().await.map_err(netlink)? {
            if let Some(address) = message_address(&message) {
                out.push(VirtualIp {
                    address,
                    prefix_len: message.header.prefix_len,
                });
            }
        }
        Ok(out)
    }

    /// Adds `vip` to the interface; already present is fine (NLM_F_REPLACE).
    /// IPv6 VIPs skip duplicate address detection: the whole point is to
    /// answer at once, and VRRP already decided who owns it.
    pub async fn add(&self, index: u32, vip: VirtualIp) -> Result<(), VipError> {
        let mut request = self
            .handle
            .address()
            .add(index, vip.address, vip.prefix_len)
            .replace();
        if vip.address.is_ipv6() {
            request
                .message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        request.execute().await.map_err(netlink)
    }

    /// Deletes the neighbour entries of `destinations` on the interface.
    /// An entry that is still resolving holds what was sent to it and sends
    /// it once it resolves — after a link without carrier comes back, when
    /// what it holds may be a dead process's advert; deleting the entry
    /// discards them (the kernel fails an unresolved entry's queue).
    /// Returns how many entries were deleted.
    pub async fn forget_neighbours(
        &self,
        index: u32,
        destinations: &[IpAddr],
    ) -> Result<usize, VipError> {
        use rtnetlink::packet_route::{
            neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage},
            AddressFamily,
        };
        let mut deleted = 0;
        // Addressed directly (interface, family, destination): no dump of a
        // neighbour table that holds every AP of the segment.
        for destination in destinations {
            let mut message = NeighbourMessage::default();
            message.header.ifindex = index;
            message.header.family = if destination.is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            message
                .attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::from(
                    *destination,
                )));
            match self.handle.neighbours().del(message).execute().await {
                Ok(()) => deleted += 1,
                // No entry: nothing is held for it.
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENOENT => {}
                Err(e) => return Err(netlink(e)),
            }
        }
        Ok(deleted)
    }

    /// Removes `vip` from the interface; absent is fine. Returns whether it
    /// was there.
    pub async fn remove(&self, index: u32, vip: VirtualIp) -> Result<bool, VipError> {
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut found = None;
        while let Some(message) = stream.try_next().await.map_err(netlink)? {
            if message_address(&message) == Some(vip.address) {
                found = Some(message);
            }
        }
        match found {
            Some(message) => {
                self.handle
                    .address()
                    .del(message)
                    .execute()
                    .await
                    .map_err(netlink)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

pub(crate) fn message_address(message: &AddressMessage) -> Option<IpAddr> {
    // IFA_LOCAL is the interface's own address on point-to-point links;
    // IFA_ADDRESS otherwise. Prefer LOCAL when present.
    let mut address = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(a) => return Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            _ => {}
        }
    }
    address
}

pub fn interface_index(name: &str) -> Result<u32, VipError> {
    nix::net::if_::if_nametoindex(name).map_err(|_| VipError::NoSuchInterface(name.to_string()))
}

/// Sends gratuitous ARP / unsolicited NA frames on one interface.
pub struct Announcer {
    socket: socket2::Socket,
    mac: [u8; 6],
}

impl Announcer {
    pub fn new(interface: &InterfaceInfo) -> Result<Self, VipError> {
        // Protocol 0: send only, nothing is queued for us to read.
        let socket =
            socket2::Socket::new(socket2::Domain::PACKET, socket2::Type::RAW.cloexec(), None)
                .map_err(|source| VipError::Io {
                    what: "socket(AF_PACKET) for gratuitous ARP",
                    source,
                })?;
        socket
            .bind(&link_address(interface.index))
            .map_err(|source| VipError::Io {
                what: "bind(AF_PACKET) for gratuitous ARP",
                source,
            })?;
        Ok(Self {
            socket,
            mac: interface.mac,
        })
    }

    /// One announcement for `vip`.
    pub fn announce(&self, vip: IpAddr) -> Result<(), VipError> {
        let frame = match vip {
            IpAddr::V4(v4) => gratuitous_arp(self.mac, v4.octets()),
            IpAddr::V6(v6) => unsolicited_na(self.mac, v6),
        };
        self.socket
            .send(&frame)
            .map(|_| ())
            .map_err(|source| VipError::Io {
                what: "sending gratuitous ARP/NA",
                source,
            })
    }
}

/// The AF_PACKET address of an interface (socket2 has no constructor for
/// `sockaddr_ll`).
fn link_address(ifindex: u32) -> socket2::SockAddr {
    let mut storage = socket2::SockAddrStorage::zeroed();
    // SAFETY: a zeroed storage is large and aligned enough for sockaddr_ll,
    // whose every field is then valid (family and index set, the rest 0).
    unsafe {
        let link = storage.view_as::<libc::sockaddr_ll>();
        link.sll_family = libc::AF_PACKET as u16;
        link.sll_ifindex = ifindex as i32;
        socket2::SockAddr::new(
            storage,
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    }
}

/// A gratuitous ARP request (RFC 5227 §3: sender and target address both the
/// VIP), broadcast, field for field as keepalived sends it — the target
/// hardware address too: all ones, not RFC 5227's zeros, since that is what
/// the switches and AP firmware of keepalived pairs have been updating their
/// caches from (Linux takes either).
pub fn gratuitous_arp(mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06]);
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet/IPv4, request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&ip);
    f
}

/// An unsolicited neighbour advertisement (RFC 4861 §7.2.6) to all nodes,
/// override flag set, with our MAC as the target link-layer address.
pub fn unsolicited_na(mac: [u8; 6], target: Ipv6Addr) -> Vec<u8> {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut icmp = vec![136, 0, 0, 0, 0x20, 0, 0, 0]; // NA, override
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[2, 1]); // target link-layer address option
    icmp.extend_from_slice(&mac);
    // ICMPv6 checksum over the pseudo-header (RFC 8200 §8.1).
    let mut pseudo = Vec::with_capacity(40 + icmp.len());
    pseudo.extend_from_slice(&target.octets());
    pseudo.extend_from_slice(&all_nodes.octets());
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(&icmp);
    let sum = internet_checksum(&pseudo, None);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x86, 0xdd]);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&target.octets());
    f.extend_from_slice(&all_nodes.octets());
    f.extend_from_slice(&icmp);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gratuitous_arp_is_keepalived_s_field_for_field() {
        let mac = [2, 0, 0, 0, 0, 1];
        let frame = gratuitous_arp(mac, [10, 77, 0, 100]);
        let mut expected = vec![0xff; 6]; // broadcast
        expected.extend_from_slice(&mac);
        expected.extend_from_slice(&[0x08, 0x06]);
        expected.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]); // request
        expected.extend_from_slice(&mac);
        expected.extend_from_slice(&[10, 77, 0, 100]);
        expected.extend_from_slice(&[0xff; 6]); // target MAC: all ones
        expected.extend_from_slice(&[10, 77, 0, 100]);
        assert_eq!(frame, expected);
    }
}
