//! Sending adverts: a raw IP socket per instance (the kernel builds the IP
//! header), TTL / hop limit 255 as RFC 5798 §5.1.1.3 requires, bound to the
//! peer interface, from our primary address.

use std::{
    io, mem,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use wimark_ha_common::classify::IPPROTO_VRRP;

pub const VRRP_GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
pub const VRRP_GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);

pub struct AdvertSocket {
    fd: OwnedFd,
    ifindex: u32,
}

fn check(rc: libc::c_int, what: &'static str) -> io::Result<()> {
    if rc != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

fn set<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
    what: &'static str,
) -> io::Result<()> {
    // SAFETY: valid pointer and size of a plain value.
    check(
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                name,
                (value as *const T).cast(),
                mem::size_of::<T>() as u32,
            )
        },
        what,
    )
}

impl AdvertSocket {
    pub fn new(interface: &str, ifindex: u32, source: IpAddr) -> io::Result<Self> {
        let family = if source.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: plain socket(2).
        let raw = unsafe {
            libc::socket(
                family,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(IPPROTO_VRRP),
            )
        };
        if raw < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("raw VRRP socket (needs CAP_NET_RAW): {e}"),
            ));
        }
        // SAFETY: fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let name = interface.as_bytes();
        // SAFETY: valid buffer and length.
        check(
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_BINDTODEVICE,
                    name.as_ptr().cast(),
                    name.len() as u32,
                )
            },
            "SO_BINDTODEVICE",
        )?;
        let ttl: libc::c_int = 255;
        let off: libc::c_int = 0;
        match source {
            IpAddr::V4(v4) => {
                set(&fd, libc::IPPROTO_IP, libc::IP_TTL, &ttl, "IP_TTL")?;
                set(
                    &fd,
                    libc::IPPROTO_IP,
                    libc::IP_MULTICAST_TTL,
                    &ttl,
                    "IP_MULTICAST_TTL",
                )?;
                set(
                    &fd,
                    libc::IPPROTO_IP,
                    libc::IP_MULTICAST_LOOP,
                    &off,
                    "IP_MULTICAST_LOOP",
                )?;
                let request = libc::ip_mreqn {
                    imr_multiaddr: libc::in_addr { s_addr: 0 },
                    imr_address: libc::in_addr {
                        s_addr: u32::from_ne_bytes(v4.octets()),
                    },
                    imr_ifindex: ifindex as i32,
                };
                set(
                    &fd,
                    libc::IPPROTO_IP,
                    libc::IP_MULTICAST_IF,
                    &request,
                    "IP_MULTICAST_IF",
                )?;
                bind(&fd, source, ifindex, "bind to the primary address")?;
            }
            IpAddr::V6(_) => {
                set(
                    &fd,
                    libc::IPPROTO_IPV6,
                    libc::IPV6_UNICAST_HOPS,
                    &ttl,
                    "IPV6_UNICAST_HOPS",
                )?;
                set(
                    &fd,
                    libc::IPPROTO_IPV6,
                    libc::IPV6_MULTICAST_HOPS,
                    &ttl,
                    "IPV6_MULTICAST_HOPS",
                )?;
                set(
                    &fd,
                    libc::IPPROTO_IPV6,
                    libc::IPV6_MULTICAST_LOOP,
                    &off,
                    "IPV6_MULTICAST_LOOP",
                )?;
                let index = ifindex as libc::c_int;
                set(
                    &fd,
                    libc::IPPROTO_IPV6,
                    libc::IPV6_MULTICAST_IF,
                    &index,
                    "IPV6_MULTICAST_IF",
                )?;
                bind(&fd, source, ifindex, "bind to the link-local address")?;
            }
        }
        join_vrrp_group(&fd, ifindex, source)?;
        Ok(Self { fd, ifindex })
    }

    pub fn send(&self, message: &[u8], destination: IpAddr) -> io::Result<()> {
        let (address, len) = socket_address(destination, self.ifindex);
        // SAFETY: valid buffers and lengths.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                (&raw const address).cast(),
                len,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// `address` as a sockaddr (IPv6 scoped to the interface), and its length.
fn socket_address(address: IpAddr, ifindex: u32) -> (libc::sockaddr_storage, u32) {
    // SAFETY: an all-zero sockaddr_storage is valid; the right variant is
    // written over its start below.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match address {
        IpAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
                sin6_scope_id: ifindex,
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as u32)
}

fn bind(fd: &OwnedFd, address: IpAddr, ifindex: u32, what: &'static str) -> io::Result<()> {
    let (storage, len) = socket_address(address, ifindex);
    // SAFETY: valid pointer and length.
    check(
        unsafe { libc::bind(fd.as_raw_fd(), (&raw const storage).cast(), len) },
        what,
    )
}

/// Joins the VRRP group on the interface so the NIC's multicast filter lets
/// adverts through to the XDP program (on real NICs, unjoined groups are
/// dropped in hardware). Adverts are read from XDP, never from this socket:
/// a classic BPF filter that accepts nothing keeps its queue empty.
fn join_vrrp_group(fd: &OwnedFd, ifindex: u32, source: IpAddr) -> io::Result<()> {
    let mut drop_all = [libc::sock_filter {
        code: 0x06,
        jt: 0,
        jf: 0,
        k: 0,
    }]; // BPF_RET|BPF_K 0
    let program = libc::sock_fprog {
        len: 1,
        filter: drop_all.as_mut_ptr(),
    };
    set(
        fd,
        libc::SOL_SOCKET,
        libc::SO_ATTACH_FILTER,
        &program,
        "SO_ATTACH_FILTER",
    )?;
    match source {
        IpAddr::V4(_) => {
            let request = libc::ip_mreqn {
                imr_multiaddr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(VRRP_GROUP_V4.octets()),
                },
                imr_address: libc::in_addr { s_addr: 0 },
                imr_ifindex: ifindex as i32,
            };
            set(
                fd,
                libc::IPPROTO_IP,
                libc::IP_ADD_MEMBERSHIP,
                &request,
                "IP_ADD_MEMBERSHIP 224.0.0.18",
            )
        }
        IpAddr::V6(_) => {
            let request = libc::ipv6_mreq {
                ipv6mr_multiaddr: libc::in6_addr {
                    s6_addr: VRRP_GROUP_V6.octets(),
                },
                ipv6mr_interface: ifindex,
            };
            set(
                fd,
                libc::IPPROTO_IPV6,
                libc::IPV6_ADD_MEMBERSHIP,
                &request,
                "IPV6_ADD_MEMBERSHIP ff02::12",
            )
        }
    }
}
