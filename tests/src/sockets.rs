//! Raw senders and receivers for lab traffic: AF_PACKET for crafted frames,
//! and the AF_PACKET counter that benchmarks compare the XDP program with.
//! Create them on a thread inside the lab namespace they are for. Sockets
//! through socket2; what it has no call for (`sockaddr_ll`, SO_RCVBUFFORCE,
//! PACKET_STATISTICS) is one small unsafe block each.

use std::{io, mem, mem::MaybeUninit, os::fd::AsRawFd};

use anyhow::{Context as _, Result};
use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, Socket, Type};

fn interface_index(interface: &str) -> Result<i32> {
    let index = wimark_ha::vip::interface_index(interface)
        .with_context(|| format!("no interface {interface} in this namespace"))?;
    Ok(index as i32)
}

/// The AF_PACKET address of an interface for `protocol` (network order).
fn link_address(ifindex: i32, protocol: u16) -> SockAddr {
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: a zeroed storage is large and aligned enough for sockaddr_ll,
    // and every field is valid (family, protocol and index set, rest 0).
    unsafe {
        let link = storage.view_as::<libc::sockaddr_ll>();
        link.sll_family = libc::AF_PACKET as u16;
        link.sll_protocol = protocol;
        link.sll_ifindex = ifindex;
        SockAddr::new(
            storage,
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    }
}

/// An AF_PACKET socket bound to one interface.
pub struct PacketSocket {
    socket: Socket,
}

impl PacketSocket {
    /// `receive`: also receive every frame (ETH_P_ALL); otherwise send only.
    pub fn bind(interface: &str, receive: bool) -> Result<Self> {
        let index = interface_index(interface)?;
        let protocol = if receive {
            (libc::ETH_P_ALL as u16).to_be()
        } else {
            0
        };
        let socket = Socket::new(
            Domain::PACKET,
            Type::RAW,
            Some(Protocol::from(i32::from(protocol))),
        )
        .context("socket(AF_PACKET)")?;
        socket
            .bind(&link_address(index, protocol))
            .context("bind(AF_PACKET)")?;
        Ok(Self { socket })
    }

    /// Sends one frame, retrying while the queue is full so nothing is lost
    /// on the sending side.
    pub fn send(&self, frame: &[u8]) -> Result<()> {
        loop {
            match self.socket.send(frame) {
                Ok(_) => return Ok(()),
                Err(e)
                    if e.raw_os_error() == Some(libc::ENOBUFS)
                        || e.kind() == io::ErrorKind::WouldBlock =>
                {
                    std::thread::yield_now();
                }
                Err(e) => return Err(e).context("send(AF_PACKET)"),
            }
        }
    }

    pub fn raw_fd(&self) -> i32 {
        self.socket.as_raw_fd()
    }

    /// SO_RCVBUFFORCE: past rmem_max, as root may.
    pub fn set_receive_buffer(&self, bytes: i32) -> Result<()> {
        // SAFETY: valid option pointer and length.
        let rc = unsafe {
            libc::setsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const bytes).cast(),
                4,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error()).context("SO_RCVBUFFORCE");
        }
        Ok(())
    }

    pub fn set_receive_timeout(&self, timeout: std::time::Duration) -> Result<()> {
        self.socket
            .set_read_timeout(Some(timeout))
            .context("SO_RCVTIMEO")
    }

    /// Receives one incoming frame into `buffer`; `None` on timeout. Frames
    /// this host sent (PACKET_OUTGOING) are skipped.
    pub fn receive(&self, buffer: &mut [u8]) -> Result<Option<usize>> {
        loop {
            // SAFETY: initialised bytes are valid MaybeUninit<u8>; recv only
            // writes into them.
            let uninit: &mut [MaybeUninit<u8>] =
                unsafe { &mut *(std::ptr::from_mut(buffer) as *mut [MaybeUninit<u8>]) };
            let (n, from) = match self.socket.recv_from_with_flags(uninit, libc::MSG_TRUNC) {
                Ok(received) => received,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("recvfrom(AF_PACKET)"),
            };
            let mut storage = from.as_storage();
            // SAFETY: the kernel filled a sockaddr_ll for this AF_PACKET socket.
            let pkttype = unsafe { storage.view_as::<libc::sockaddr_ll>() }.sll_pkttype;
            if pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            return Ok(Some(n));
        }
    }

    /// (packets received, packets dropped) since the last call
    /// (PACKET_STATISTICS resets on read).
    pub fn statistics(&self) -> Result<(u32, u32)> {
        // SAFETY: tpacket_stats is plain data.
        let mut stats: libc::tpacket_stats = unsafe { mem::zeroed() };
        let mut len = mem::size_of::<libc::tpacket_stats>() as u32;
        // SAFETY: valid pointers.
        let rc = unsafe {
            libc::getsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&raw mut stats).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error()).context("PACKET_STATISTICS");
        }
        Ok((stats.tp_packets, stats.tp_drops))
    }
}

/// A raw IPv4 socket for one IP protocol (the kernel writes the IP header),
/// as the daemon will send adverts: multicast TTL set, output interface
/// chosen by address.
pub struct RawIpSocket {
    socket: Socket,
}

impl RawIpSocket {
    pub fn new(
        protocol: i32,
        multicast_ttl: u8,
        multicast_interface: std::net::Ipv4Addr,
    ) -> Result<Self> {
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(protocol)))
            .context("socket(AF_INET, SOCK_RAW)")?;
        let ttl = u32::from(multicast_ttl);
        socket
            .set_multicast_ttl_v4(ttl)
            .and_then(|()| socket.set_ttl_v4(ttl))
            .and_then(|()| socket.set_multicast_if_v4(&multicast_interface))
            .context("setsockopt on the raw socket")?;
        Ok(Self { socket })
    }

    pub fn send_to(&self, payload: &[u8], destination: std::net::Ipv4Addr) -> Result<()> {
        let address = SockAddr::from(std::net::SocketAddrV4::new(destination, 0));
        self.socket
            .send_to(payload, &address)
            .context("sendto on the raw socket")?;
        Ok(())
    }
}
