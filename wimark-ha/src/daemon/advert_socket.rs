//! Sending adverts: a raw IP socket per instance (the kernel builds the IP
//! header), TTL / hop limit 255 as RFC 5798 §5.1.1.3 requires, bound to the
//! peer interface, from our primary address, marked IP precedence 6
//! (internetwork control, TOS / traffic class 0xc0, as keepalived sends) so
//! QoS queues keep heartbeats ahead of bulk traffic.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6},
};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, SockFilter, Socket, Type};
use wimark_ha_common::classify::IPPROTO_VRRP;

pub const VRRP_GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
pub const VRRP_GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);

/// TTL / hop limit of every advert (RFC 5798 §5.1.1.3, §5.1.2.3).
const VRRP_TTL: u32 = 255;

/// IP precedence 6, internetwork control (RFC 791; DSCP CS6, RFC 4594):
/// what routing protocols and keepalived's adverts carry.
pub const VRRP_TOS: u32 = 0xc0;

pub struct AdvertSocket {
    socket: Socket,
    ifindex: u32,
}

/// Names the step that failed, keeping the kind.
fn step<T>(result: io::Result<T>, what: &str) -> io::Result<T> {
    result.map_err(|e| io::Error::new(e.kind(), format!("{what}: {e}")))
}

impl AdvertSocket {
    pub fn new(interface: &str, ifindex: u32, source: IpAddr) -> io::Result<Self> {
        let domain = if source.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let socket = step(
            Socket::new(
                domain,
                Type::RAW.cloexec(),
                Some(Protocol::from(i32::from(IPPROTO_VRRP))),
            ),
            "raw VRRP socket (needs CAP_NET_RAW)",
        )?;
        step(
            socket.bind_device(Some(interface.as_bytes())),
            "SO_BINDTODEVICE",
        )?;
        match source {
            IpAddr::V4(v4) => {
                step(socket.set_ttl_v4(VRRP_TTL), "IP_TTL")?;
                step(socket.set_tos_v4(VRRP_TOS), "IP_TOS")?;
                step(socket.set_multicast_ttl_v4(VRRP_TTL), "IP_MULTICAST_TTL")?;
                step(socket.set_multicast_loop_v4(false), "IP_MULTICAST_LOOP")?;
                step(socket.set_multicast_if_v4(&v4), "IP_MULTICAST_IF")?;
                step(
                    socket.bind(&socket_address(source, ifindex)),
                    "bind to the primary address",
                )?;
            }
            IpAddr::V6(_) => {
                step(socket.set_unicast_hops_v6(VRRP_TTL), "IPV6_UNICAST_HOPS")?;
                step(socket.set_tclass_v6(VRRP_TOS), "IPV6_TCLASS")?;
                step(
                    socket.set_multicast_hops_v6(VRRP_TTL),
                    "IPV6_MULTICAST_HOPS",
                )?;
                step(socket.set_multicast_loop_v6(false), "IPV6_MULTICAST_LOOP")?;
                step(socket.set_multicast_if_v6(ifindex), "IPV6_MULTICAST_IF")?;
                step(
                    socket.bind(&socket_address(source, ifindex)),
                    "bind to the link-local address",
                )?;
            }
        }
        join_vrrp_group(&socket, ifindex, source)?;
        Ok(Self { socket, ifindex })
    }

    pub fn send(&self, message: &[u8], destination: IpAddr) -> io::Result<()> {
        self.socket
            .send_to(message, &socket_address(destination, self.ifindex))
            .map(|_| ())
    }
}

/// `address` as a socket address (IPv6 scoped to the interface).
fn socket_address(address: IpAddr, ifindex: u32) -> SockAddr {
    match address {
        IpAddr::V4(v4) => SockAddr::from(SocketAddr::new(IpAddr::V4(v4), 0)),
        IpAddr::V6(v6) => SockAddr::from(SocketAddrV6::new(v6, 0, 0, ifindex)),
    }
}

/// Joins the VRRP group on the interface so the NIC's multicast filter lets
/// adverts through to the XDP program (on real NICs, unjoined groups are
/// dropped in hardware). Adverts are read from XDP, never from this socket:
/// a classic BPF filter that accepts nothing keeps its queue empty.
fn join_vrrp_group(socket: &Socket, ifindex: u32, source: IpAddr) -> io::Result<()> {
    const BPF_RET_K: u16 = 0x06;
    step(
        socket.attach_filter(&[SockFilter::new(BPF_RET_K, 0, 0, 0)]),
        "SO_ATTACH_FILTER",
    )?;
    match source {
        IpAddr::V4(_) => step(
            socket.join_multicast_v4_n(&VRRP_GROUP_V4, &InterfaceIndexOrAddress::Index(ifindex)),
            "IP_ADD_MEMBERSHIP 224.0.0.18",
        ),
        IpAddr::V6(_) => step(
            socket.join_multicast_v6(&VRRP_GROUP_V6, ifindex),
            "IPV6_ADD_MEMBERSHIP ff02::12",
        ),
    }
}
