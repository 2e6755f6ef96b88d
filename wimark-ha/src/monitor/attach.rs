//! Putting the XDP program on an interface: name lookup, refusing to clobber a
//! program someone else attached (unless forced), driver mode with a generic
//! fallback.

use std::fmt;

use aya::{programs::XdpMode, Ebpf};
use futures_util::TryStreamExt as _;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached};

use super::{errno_of, MonitorError};

// linux/if_link.h
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_FLAGS_HW_MODE: u32 = 1 << 3;

/// How the program ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native XDP in the driver.
    Driver,
    /// Generic (skb) XDP: the driver has no native support.
    Generic,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Driver => "driver",
            AttachMode::Generic => "generic",
        })
    }
}

/// An XDP program found on an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingProgram {
    pub id: u32,
    pub name: String,
    /// `XDP_FLAGS_*_MODE` needed to detach it.
    mode_flags: u32,
}

pub(super) fn interface_index(interface: &str) -> Result<u32, MonitorError> {
    let missing = || MonitorError::NoSuchInterface {
        interface: interface.to_string(),
    };
    nix::net::if_::if_nametoindex(interface).map_err(|_| missing())
}

fn netlink_error(interface: &str, detail: impl fmt::Display) -> MonitorError {
    MonitorError::Netlink {
        interface: interface.to_string(),
        detail: detail.to_string(),
    }
}

fn netlink_handle(interface: &str) -> Result<rtnetlink::Handle, MonitorError> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|e| netlink_error(interface, e))?;
    tokio::spawn(connection);
    Ok(handle)
}

/// The XDP program attached to `interface` right now, if any (rtnetlink
/// RTM_GETLINK, IFLA_XDP).
pub async fn attached_xdp_program(
    interface: &str,
) -> Result<Option<ExistingProgram>, MonitorError> {
    let ifindex = interface_index(interface)?;
    let handle = netlink_handle(interface)?;
    query_attached(&handle, interface, ifindex).await
}

async fn query_attached(
    handle: &rtnetlink::Handle,
    interface: &str,
    ifindex: u32,
) -> Result<Option<ExistingProgram>, MonitorError> {
    let mut links = handle.link().get().match_index(ifindex).execute();
    let mut found = None;
    while let Some(message) = links
        .try_next()
        .await
        .map_err(|e| netlink_error(interface, e))?
    {
        for attribute in message.attributes {
            let LinkAttribute::Xdp(xdp) = attribute else {
                continue;
            };
            let mut id = 0;
            let mut mode_flags = 0;
            for nla in xdp {
                match nla {
                    LinkXdp::ProgId(prog) => id = prog,
                    LinkXdp::Attached(XdpAttached::Driver) => mode_flags = XDP_FLAGS_DRV_MODE,
                    LinkXdp::Attached(XdpAttached::SocketBuffer) => mode_flags = XDP_FLAGS_SKB_MODE,
                    LinkXdp::Attached(XdpAttached::Hardware) => mode_flags = XDP_FLAGS_HW_MODE,
                    _ => {}
                }
            }
            if id != 0 {
                found = Some(ExistingProgram {
                    id,
                    name: program_name(id),
                    mode_flags,
                });
            }
        }
    }
    Ok(found)
}

fn program_name(id: u32) -> String {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|info| info.id() == id)
        .and_then(|info| info.name_as_str().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

/// Removes a program attached through netlink. One held by another process's
/// bpf_link cannot be removed this way; the kernel says EBUSY.
async fn detach_foreign(
    handle: &rtnetlink::Handle,
    interface: &str,
    ifindex: u32,
    existing: &ExistingProgram,
) -> Result<(), MonitorError> {
    let mut message = LinkMessage::default();
    message.header.index = ifindex;
    message.attributes.push(LinkAttribute::Xdp(vec![
        LinkXdp::Fd(-1),
        LinkXdp::Flags(existing.mode_flags),
    ]));
    handle.link().set(message).execute().await.map_err(|e| MonitorError::ReplaceFailed {
        interface: interface.to_string(),
        id: existing.id,
        detail: format!("{e} (a program held by another process's bpf_link can only be removed by that process)"),
    })?;
    tracing::warn!(interface, id = existing.id, name = %existing.name, "replaced the XDP program already attached (--force)");
    Ok(())
}

pub(super) async fn attach(
    ebpf: &mut Ebpf,
    interface: &str,
    ifindex: u32,
    force: bool,
) -> Result<AttachMode, MonitorError> {
    let handle = netlink_handle(interface)?;
    if let Some(existing) = query_attached(&handle, interface, ifindex).await? {
        if !force {
            return Err(MonitorError::AlreadyAttached {
                interface: interface.to_string(),
                id: existing.id,
                name: existing.name,
            });
        }
        detach_foreign(&handle, interface, ifindex, &existing).await?;
    }
    let program = super::monitor_program(ebpf)?;
    let attach_error = |e: &aya::programs::ProgramError| match errno_of(e) {
        Some(libc::EPERM) | Some(libc::EACCES) => MonitorError::NotPermitted {
            detail: super::one_line(e),
        },
        _ => MonitorError::Attach {
            interface: interface.to_string(),
            detail: e.to_string(),
        },
    };
    match program.attach_to_if_index(ifindex, XdpMode::Driver) {
        Ok(_) => Ok(AttachMode::Driver),
        Err(e) => match errno_of(&e) {
            // Someone attached between our check and now.
            Some(libc::EBUSY) | Some(libc::EEXIST) => Err(attach_error(&e)),
            Some(libc::EPERM) | Some(libc::EACCES) => Err(MonitorError::NotPermitted {
                detail: super::one_line(&e),
            }),
            _ => {
                tracing::info!(
                    interface,
                    "native XDP unavailable ({e}); using generic mode"
                );
                program
                    .attach_to_if_index(ifindex, XdpMode::Skb)
                    .map(|_| AttachMode::Generic)
                    .map_err(|e| attach_error(&e))
            }
        },
    }
}
