//! Raw senders and receivers for lab traffic: AF_PACKET for crafted frames,
//! and the AF_PACKET counter that benchmarks compare the XDP program with.
//! Create them on a thread inside the lab namespace they are for.

use std::{
    io, mem,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{Context as _, Result};

fn interface_index(interface: &str) -> Result<i32> {
    let index = wimark_ha::vip::interface_index(interface)
        .with_context(|| format!("no interface {interface} in this namespace"))?;
    Ok(index as i32)
}

/// An AF_PACKET socket bound to one interface.
pub struct PacketSocket {
    fd: OwnedFd,
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
        // SAFETY: plain socket(2).
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(protocol)) };
        if raw < 0 {
            return Err(io::Error::last_os_error()).context("socket(AF_PACKET)");
        }
        // SAFETY: fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut address: libc::sockaddr_ll = unsafe { mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = protocol;
        address.sll_ifindex = index;
        // SAFETY: valid pointer and length.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const address).cast(),
                mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error()).context("bind(AF_PACKET)");
        }
        Ok(Self { fd })
    }

    /// Sends one frame, retrying while the queue is full so nothing is lost
    /// on the sending side.
    pub fn send(&self, frame: &[u8]) -> Result<()> {
        loop {
            // SAFETY: valid buffer.
            let sent =
                unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            if sent >= 0 {
                return Ok(());
            }
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::ENOBUFS)
                || error.kind() == io::ErrorKind::WouldBlock
            {
                std::thread::yield_now();
                continue;
            }
            return Err(error).context("send(AF_PACKET)");
        }
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    pub fn set_receive_buffer(&self, bytes: i32) -> Result<()> {
        // SAFETY: valid option pointer and length.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
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
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as _,
            tv_usec: timeout.subsec_micros() as _,
        };
        // SAFETY: valid option pointer and length.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                mem::size_of::<libc::timeval>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error()).context("SO_RCVTIMEO");
        }
        Ok(())
    }

    /// Receives one incoming frame into `buffer`; `None` on timeout. Frames
    /// this host sent (PACKET_OUTGOING) are skipped.
    pub fn receive(&self, buffer: &mut [u8]) -> Result<Option<usize>> {
        loop {
            // SAFETY: zeroed sockaddr_ll is valid.
            let mut from: libc::sockaddr_ll = unsafe { mem::zeroed() };
            let mut from_len = mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: valid buffers and lengths.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    libc::MSG_TRUNC,
                    (&raw mut from).cast(),
                    &mut from_len,
                )
            };
            if n < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::WouldBlock {
                    return Ok(None);
                }
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error).context("recvfrom(AF_PACKET)");
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            return Ok(Some(n as usize));
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
                self.fd.as_raw_fd(),
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
    fd: OwnedFd,
}

impl RawIpSocket {
    pub fn new(
        protocol: i32,
        multicast_ttl: u8,
        multicast_interface: std::net::Ipv4Addr,
    ) -> Result<Self> {
        // SAFETY: plain socket(2).
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, protocol) };
        if raw < 0 {
            return Err(io::Error::last_os_error()).context("socket(AF_INET, SOCK_RAW)");
        }
        // SAFETY: fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let ttl = i32::from(multicast_ttl);
        let interface = libc::in_addr {
            s_addr: u32::from_ne_bytes(multicast_interface.octets()),
        };
        // SAFETY: valid option pointers and lengths.
        unsafe {
            if libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MULTICAST_TTL,
                (&raw const ttl).cast(),
                4,
            ) != 0
                || libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_TTL,
                    (&raw const ttl).cast(),
                    4,
                ) != 0
                || libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_MULTICAST_IF,
                    (&raw const interface).cast(),
                    mem::size_of::<libc::in_addr>() as u32,
                ) != 0
            {
                return Err(io::Error::last_os_error()).context("setsockopt on the raw socket");
            }
        }
        Ok(Self { fd })
    }

    pub fn send_to(&self, payload: &[u8], destination: std::net::Ipv4Addr) -> Result<()> {
        // SAFETY: zeroed sockaddr_in is valid; fields set below.
        let mut address: libc::sockaddr_in = unsafe { mem::zeroed() };
        address.sin_family = libc::AF_INET as u16;
        address.sin_addr = libc::in_addr {
            s_addr: u32::from_ne_bytes(destination.octets()),
        };
        // SAFETY: valid buffers and lengths.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                payload.as_ptr().cast(),
                payload.len(),
                0,
                (&raw const address).cast(),
                mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error()).context("sendto on the raw socket");
        }
        Ok(())
    }
}
