//! The link state of the peer interfaces, as the kernel announces it
//! (rtnetlink RTMGRP_LINK multicast): the engine polls nothing, it is told.

use std::{
    ffi::CString,
    io, mem,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
};

const RTMGRP_LINK: u32 = 1;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const IFF_LOWER_UP: u32 = 0x1_0000;

pub struct LinkWatcher {
    fd: OwnedFd,
}

/// Up and carrying: administratively up and with a link (carrier).
fn usable(flags: u32) -> bool {
    flags & libc::IFF_UP as u32 != 0 && flags & (IFF_LOWER_UP | libc::IFF_RUNNING as u32) != 0
}

impl LinkWatcher {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain socket(2).
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: zeroed sockaddr_nl is valid; fields set below.
        let mut address: libc::sockaddr_nl = unsafe { mem::zeroed() };
        address.nl_family = libc::AF_NETLINK as u16;
        address.nl_groups = RTMGRP_LINK;
        // SAFETY: valid pointer and length.
        if unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const address).cast(),
                mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Every (interface index, usable) the kernel announced since last time.
    pub fn drain(&self) -> Vec<(u32, bool)> {
        let mut changes = Vec::new();
        let mut buffer = [0u8; 8192];
        loop {
            // SAFETY: valid buffer.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                )
            };
            if n <= 0 {
                return changes;
            }
            let mut message = &buffer[..n as usize];
            // nlmsghdr (16 bytes) then ifinfomsg (16 bytes): index at 4, flags at 8.
            while message.len() >= 32 {
                let len =
                    u32::from_ne_bytes([message[0], message[1], message[2], message[3]]) as usize;
                let kind = u16::from_ne_bytes([message[4], message[5]]);
                if len < 16 || len > message.len() {
                    break;
                }
                if (kind == RTM_NEWLINK || kind == RTM_DELLINK) && len >= 32 {
                    let body = &message[16..];
                    let index = i32::from_ne_bytes([body[4], body[5], body[6], body[7]]) as u32;
                    let flags = u32::from_ne_bytes([body[8], body[9], body[10], body[11]]);
                    changes.push((index, kind == RTM_NEWLINK && usable(flags)));
                }
                let aligned = (len + 3) & !3;
                message = &message[aligned.min(message.len())..];
            }
        }
    }
}

/// Whether `interface` is up and has a link right now (SIOCGIFFLAGS).
pub fn link_usable(interface: &str) -> io::Result<bool> {
    // SAFETY: plain socket(2) for the ioctl.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: zeroed ifreq is valid; the name is copied in below.
    let mut request: libc::ifreq = unsafe { mem::zeroed() };
    let name = CString::new(interface).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.as_bytes_with_nul()) {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: valid ifreq pointer.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { request.ifr_ifru.ifru_flags } as u16 as u32;
    // SIOCGIFFLAGS carries IFF_RUNNING (carrier) in its 16 bits.
    Ok(usable(flags))
}
