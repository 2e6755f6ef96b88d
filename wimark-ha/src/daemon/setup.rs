//! Start-up: the XDP monitor on every link the config names, and the
//! engine's instances with their sockets, announcers and heartbeat paths.
//!
//! Owns: what is attached and opened before the engine starts, and the
//! decision to resume a held mastership or clear a stale VIP. Must not: run
//! the protocol (the engine does) or keep anything once it has handed over.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use anyhow::Context as _;

use super::{advert_socket::AdvertSocket, engine, link, restart};
use crate::{
    config::InstanceConfig,
    monitor::{AdvertReader, Monitor, MonitorOptions},
    vip::{Announcer, InterfaceInfo, VipError, Vips},
};

/// One XDP monitor (and one advert ring) per link: each instance's
/// interface and its heartbeat links.
pub struct Links {
    pub monitors: Vec<Monitor>,
    /// The advert ring of each monitor, same order.
    pub readers: Vec<AdvertReader>,
    /// Per monitor: the VRIDs with an allow-list, and the list.
    pub allow_lists: Vec<BTreeMap<u8, Vec<IpAddr>>>,
    /// Interface name → what it is and its index in the vectors above.
    by_name: BTreeMap<String, (InterfaceInfo, usize)>,
}

impl Links {
    fn get(&self, name: &str) -> (InterfaceInfo, usize) {
        // Every name comes from the config the links were attached for.
        self.by_name[name].clone()
    }
}

/// Attaches a monitor to every link, each watching its VRIDs with the
/// sources allowed there (a heartbeat link: only that link's peer), its AP
/// tables sized for `[ap_recovery] max_aps` (the default without one).
pub async fn attach_links(
    instances: &[InstanceConfig],
    vips: &Vips,
    kernel_log: Option<log::Level>,
    ap_recovery: Option<&crate::config::ApRecoveryConfig>,
) -> anyhow::Result<Links> {
    let max_aps = ap_recovery.map(|r| r.max_aps);
    let mut watched: BTreeMap<String, Vec<(u8, Vec<IpAddr>)>> = BTreeMap::new();
    for instance in instances {
        watched
            .entry(instance.interface.clone())
            .or_default()
            .push((instance.vrid, instance.allowed_peers.clone()));
        for link in &instance.heartbeats {
            watched
                .entry(link.interface.clone())
                .or_default()
                .push((instance.vrid, vec![link.peer]));
        }
    }
    let mut links = Links {
        monitors: Vec::new(),
        readers: Vec::new(),
        allow_lists: Vec::new(),
        by_name: BTreeMap::new(),
    };
    for (name, watch) in watched {
        // These errors name the interface already ("interface `eth1`:
        // interface `eth1` does not exist" said it twice); netlink's do not.
        let info = match vips.interface(&name).await {
            Ok(info) => info,
            Err(e @ (VipError::NoSuchInterface(_) | VipError::NoPrimaryAddress { .. })) => {
                return Err(e.into())
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("interface `{name}`"))),
        };
        let mut monitor = Monitor::attach(
            &name,
            MonitorOptions {
                force: false,
                kernel_log,
                max_aps,
            },
        )
        .await
        .with_context(|| format!("attaching the XDP monitor to `{name}`"))?;
        links.readers.push(monitor.take_adverts(&watch)?);
        links.allow_lists.push(
            watch
                .into_iter()
                .filter(|(_, peers)| !peers.is_empty())
                .collect(),
        );
        links.monitors.push(monitor);
        links.by_name.insert(name, (info, links.readers.len() - 1));
    }
    Ok(links)
}

/// The engine's instances, and the names of those resuming a mastership a
/// restart hold left them. Any other instance starts without its VIPs: one
/// left on the interface (by a crash) is removed first.
pub async fn engine_instances(
    configs: Vec<InstanceConfig>,
    links: &Links,
    vips: &Vips,
    held: &[restart::Held],
) -> anyhow::Result<(Vec<engine::EngineInstance>, Vec<String>)> {
    let mut announcers: BTreeMap<String, Arc<Announcer>> = BTreeMap::new();
    let mut instances = Vec::new();
    let mut resumed = Vec::new();
    for instance in configs {
        let name = instance.interface.clone();
        let (info, reader) = links.get(&name);
        let announcer = match announcers.get(&name) {
            Some(announcer) => announcer.clone(),
            None => {
                let announcer = Arc::new(Announcer::new(&info)?);
                announcers.insert(name.clone(), announcer.clone());
                announcer
            }
        };
        let ipv4 = instance.virtual_ips[0].address.is_ipv4();
        let owner = instance.is_address_owner();
        if owner {
            if let Some(missing) = instance
                .virtual_ips
                .iter()
                .find(|vip| !info.addresses.iter().any(|a| a.address == vip.address))
            {
                anyhow::bail!(
                    "instance {}: priority 255 is the address owner's (RFC 5798), but {} is not an address of `{name}`: assign it to the interface, or use priority 254 or lower to have wimark-ha add and remove it",
                    instance.name,
                    missing.address
                );
            }
        }
        let primary = info
            .primary_address(ipv4, if owner { &[] } else { &instance.virtual_ips })
            .with_context(|| format!("instance {}", instance.name))?;
        let resume = held.iter().any(|h| h.resumable_by(&instance, &info));
        if owner {
            tracing::info!(instance = %instance.name, %primary, "address owner (priority 255): sends from its own address, never removes its VIPs");
        } else if resume {
            tracing::info!(instance = %instance.name, "resuming mastership after a restart in place");
            resumed.push(instance.name.clone());
        } else {
            for vip in &instance.virtual_ips {
                if vips.remove(info.index, *vip).await? {
                    tracing::warn!(instance = %instance.name, %vip, "removed a VIP left on {name} (by a crash?) before starting");
                }
            }
        }
        let socket = AdvertSocket::new(&name, info.index, primary)
            .with_context(|| format!("instance {}: advert socket on `{name}`", instance.name))?;
        let heartbeats = heartbeat_paths(&instance, ipv4, links)?;
        let mut engine_instance = engine::EngineInstance::new(
            instance, info, primary, reader, socket, announcer, heartbeats,
        );
        engine_instance.resume = resume && !owner;
        instances.push(engine_instance);
    }
    Ok((instances, resumed))
}

/// Each heartbeat link's socket (sending from our address there) and ring.
fn heartbeat_paths(
    instance: &InstanceConfig,
    ipv4: bool,
    links: &Links,
) -> anyhow::Result<Vec<engine::HeartbeatPath>> {
    let mut paths = Vec::new();
    for link in &instance.heartbeats {
        let what = || {
            format!(
                "instance {}: heartbeat link `{}`",
                instance.name, link.interface
            )
        };
        let (info, reader) = links.get(&link.interface);
        let local = info.primary_address(ipv4, &[]).with_context(what)?;
        let socket = AdvertSocket::new(&link.interface, info.index, local).with_context(what)?;
        paths.push(engine::HeartbeatPath {
            link_up: link::link_usable(&link.interface).unwrap_or(true),
            interface: info,
            reader,
            socket: std::sync::Arc::new(socket),
            local,
            peer: link.peer,
            adverts_received: 0,
            last_advert_at: None,
        });
    }
    Ok(paths)
}
