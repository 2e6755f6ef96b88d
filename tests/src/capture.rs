//! A packet capture on a lab link (AF_PACKET with kernel receive
//! timestamps) that keeps only what a failover timeline needs: VRRP adverts
//! and gratuitous ARPs, each with when the kernel saw it.

use std::{
    io, mem,
    net::{IpAddr, Ipv4Addr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result};
use wimark_ha_common::classify::{classify, Verdict};

use crate::{lab::enter_netns, sockets::PacketSocket};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    Advert {
        source: IpAddr,
        priority: u8,
        /// IPv4 TOS or IPv6 traffic class.
        tos: u8,
    },
    /// Sender IP == target IP: an announcement of `address` by `mac`.
    GratuitousArp {
        address: Ipv4Addr,
        mac: [u8; 6],
        /// The ARP opcode (1 request, 2 reply) and target hardware address:
        /// the fields in which announcers differ.
        opcode: u16,
        target_mac: [u8; 6],
    },
}

/// (CLOCK_REALTIME ns at kernel receive, what).
pub type Record = (u64, Seen);

pub struct Capture {
    records: Arc<Mutex<Vec<Record>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<Result<()>>>,
}

pub fn realtime_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

impl Capture {
    /// Starts capturing on `interface` inside `namespace`.
    pub fn start(namespace: &str, interface: &str) -> Result<Self> {
        let records = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let path = crate::lab::netns_path(namespace);
        let interface = interface.to_string();
        let thread = thread::spawn({
            let records = records.clone();
            let stop = stop.clone();
            move || -> Result<()> {
                enter_netns(&path)?;
                let socket = PacketSocket::bind(&interface, true)?;
                socket.set_receive_timeout(Duration::from_millis(50))?;
                let fd = socket.raw_fd();
                let on: libc::c_int = 1;
                // SAFETY: valid option pointer.
                if unsafe {
                    libc::setsockopt(
                        fd,
                        libc::SOL_SOCKET,
                        libc::SO_TIMESTAMPNS,
                        (&raw const on).cast(),
                        4,
                    )
                } != 0
                {
                    return Err(io::Error::last_os_error()).context("SO_TIMESTAMPNS");
                }
                ready_tx.send(()).ok();
                let mut buffer = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let Some((len, at)) = receive_stamped(fd, &mut buffer)? else {
                        continue;
                    };
                    let frame = &buffer[..len];
                    let seen = match classify(frame) {
                        Verdict::Vrrp(advert) => Some(Seen::Advert {
                            source: std::net::IpAddr::from(advert.source),
                            priority: advert.priority,
                            tos: ip_tos(frame),
                        }),
                        _ => gratuitous_arp(frame),
                    };
                    if let Some(seen) = seen {
                        records.lock().expect("capture lock").push((at, seen));
                    }
                }
                Ok(())
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .context("capture did not start")?;
        Ok(Self {
            records,
            stop,
            thread: Some(thread),
        })
    }

    pub fn records(&self) -> Vec<Record> {
        self.records.lock().expect("capture lock").clone()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn gratuitous_arp(frame: &[u8]) -> Option<Seen> {
    if frame.len() < 42 || frame[12..14] != [0x08, 0x06] {
        return None;
    }
    let arp = &frame[14..];
    let sender_ip = Ipv4Addr::new(arp[14], arp[15], arp[16], arp[17]);
    let target_ip = Ipv4Addr::new(arp[24], arp[25], arp[26], arp[27]);
    if sender_ip != target_ip {
        return None;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&arp[8..14]);
    let mut target_mac = [0u8; 6];
    target_mac.copy_from_slice(&arp[18..24]);
    Some(Seen::GratuitousArp {
        address: sender_ip,
        mac,
        opcode: u16::from_be_bytes([arp[6], arp[7]]),
        target_mac,
    })
}

/// recvmsg with the kernel's receive timestamp (CLOCK_REALTIME ns).
fn receive_stamped(fd: i32, buffer: &mut [u8]) -> Result<Option<(usize, u64)>> {
    let mut iov = libc::iovec {
        iov_base: buffer.as_mut_ptr().cast(),
        iov_len: buffer.len(),
    };
    let mut control = [0u8; 128];
    // SAFETY: zeroed msghdr is valid; pointers set below outlive the call.
    let mut message: libc::msghdr = unsafe { mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = control.len();
    // SAFETY: valid msghdr.
    let n = unsafe { libc::recvmsg(fd, &mut message, 0) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        ) {
            return Ok(None);
        }
        return Err(e).context("recvmsg on the capture");
    }
    let mut at = realtime_ns();
    // SAFETY: walking the control messages the kernel wrote.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&message);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                at = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
            }
            cmsg = libc::CMSG_NXTHDR(&message, cmsg);
        }
    }
    Ok(Some((n as usize, at)))
}

/// The TOS byte (IPv4) or traffic class (IPv6) of an untagged frame the
/// classifier already found to be a valid advert.
fn ip_tos(frame: &[u8]) -> u8 {
    const ETH: usize = wimark_ha_common::classify::ETH_HEADER_LEN;
    match frame[ETH] >> 4 {
        4 => frame[ETH + 1],
        _ => (frame[ETH] << 4) | (frame[ETH + 1] >> 4),
    }
}
