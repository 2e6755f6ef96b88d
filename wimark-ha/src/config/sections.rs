//! The rules of each section: `[[instance]]`, `[[sync_group]]`, `[roles]`
//! and its hooks — raw shapes in, model values or a `ConfigError` out
//! (`[[instance.track]]` in tracker.rs, `[ap_recovery]` in ap_recovery.rs,
//! `[witness]` in witness.rs).

use super::*;
use super::{context::Context, raw::*};

impl Context<'_> {
    pub(super) fn instance(
        &self,
        raw: RawInstance,
        warnings: &mut Vec<ConfigWarning>,
    ) -> Result<InstanceConfig, ConfigError> {
        let name = raw.name.get_ref().trim().to_string();
        // Shown in `status` lines, metrics labels and the journal: a newline
        // would forge lines there.
        if !plain_name(&name) {
            return Err(self.error(
                raw.name.span(),
                "name",
                "must be 1 to 64 letters, digits, `_`, `-` or `.`, not starting with `.` (keepalived's VI_1 or WIM1 are fine)",
            ));
        }
        let interface = self.interface_name(&raw.interface, "interface")?;
        let vrid = self.integer(&raw.vrid, "vrid", 1, 255)? as u8;
        let priority = self.integer(&raw.priority, "priority", 1, 255)? as u8;
        let version = match raw.version.as_ref().map(|v| *v.get_ref()) {
            None | Some(3) => Version::V3,
            Some(2) => Version::V2,
            Some(_) => {
                return Err(self.error(
                    raw.version.as_ref().map_or(0..0, |v| v.span()),
                    "version",
                    "must be 2 (RFC 3768) or 3 (RFC 5798)",
                ))
            }
        };
        let advert_interval = match &raw.advert_interval {
            None => Duration::from_secs(1),
            Some(text) => {
                let interval = self.duration(text, "advert_interval")?;
                let ok = match version {
                    Version::V2 => {
                        interval.subsec_nanos() == 0 && (1..=255).contains(&interval.as_secs())
                    }
                    Version::V3 => {
                        interval.as_nanos().is_multiple_of(10_000_000)
                            && (10..=40_950).contains(&interval.as_millis())
                    }
                };
                if !ok {
                    let allowed = match version {
                        Version::V2 => "VRRPv2 carries whole seconds: 1s to 255s",
                        Version::V3 => {
                            "VRRPv3 carries centiseconds: 10ms to 40950ms in steps of 10ms"
                        }
                    };
                    return Err(self.error(
                        text.span(),
                        "advert_interval",
                        &format!("{:?} is not allowed; {allowed}", interval),
                    ));
                }
                interval
            }
        };
        let auth = match (&raw.auth_pass, version) {
            (None, _) => Auth::None,
            (Some(pass), Version::V3) => {
                return Err(self.error(
                    pass.span(),
                    "auth_pass",
                    "VRRPv3 has no authentication (RFC 5798 §9); remove it or use version = 2",
                ))
            }
            (Some(pass), Version::V2) => {
                let text = pass.get_ref();
                if text.is_empty() {
                    return Err(self.error(pass.span(), "auth_pass", "must not be empty"));
                }
                if text.len() > 8 {
                    warnings.push(ConfigWarning {
                        line: self.line_of(pass.span().start),
                        key: "auth_pass".to_string(),
                        message:
                            "longer than 8 bytes: only the first 8 are used, as keepalived does"
                                .to_string(),
                    });
                }
                Auth::password(text)
            }
        };
        let mut virtual_ips = Vec::new();
        for entry in raw.virtual_ips.get_ref() {
            let vip = self.virtual_ip(entry)?;
            if version == Version::V2 && vip.address.is_ipv6() {
                return Err(self.error(
                    entry.span(),
                    "virtual_ips",
                    "VRRPv2 is IPv4 only; use version = 3 for IPv6",
                ));
            }
            if let Some(first) = virtual_ips.first().map(|v: &VirtualIp| v.address) {
                if first.is_ipv4() != vip.address.is_ipv4() {
                    return Err(self.error(
                        entry.span(),
                        "virtual_ips",
                        "mixes IPv4 and IPv6; one instance carries one family (RFC 5798 §5.2.5)",
                    ));
                }
            }
            virtual_ips.push(vip);
        }
        if virtual_ips.is_empty() {
            return Err(self.error(
                raw.virtual_ips.span(),
                "virtual_ips",
                "needs at least one address, like \"10.10.10.3/24\"",
            ));
        }
        let addresses = |list: &[Spanned<String>], key: &str| -> Result<Vec<IpAddr>, ConfigError> {
            let ipv4 = virtual_ips[0].address.is_ipv4();
            list.iter()
                .map(|peer| {
                    let address: IpAddr = peer.get_ref().parse().map_err(|_| {
                        self.error(
                            peer.span(),
                            key,
                            &format!("`{}` is not an IP address", peer.get_ref()),
                        )
                    })?;
                    if address.is_ipv4() != ipv4 {
                        return Err(self.error(
                            peer.span(),
                            key,
                            &format!("{address} is not of the virtual IPs' family"),
                        ));
                    }
                    if let Some(why) = super::context::unusable_address(address) {
                        return Err(self.error(
                            peer.span(),
                            key,
                            &format!("{address}: {why}; a peer is the other server's own address"),
                        ));
                    }
                    if virtual_ips.iter().any(|vip| vip.address == address) {
                        return Err(self.error(
                            peer.span(),
                            key,
                            &format!("{address} is one of this instance's virtual IPs; a peer is the other server's own address, which moves with no failover"),
                        ));
                    }
                    Ok(address)
                })
                .collect::<Result<Vec<_>, _>>()
                .and_then(|found| {
                    for (index, address) in found.iter().enumerate() {
                        if found[..index].contains(address) {
                            return Err(self.error(
                                list[index].span(),
                                key,
                                &format!("{address} is listed twice"),
                            ));
                        }
                    }
                    Ok(found)
                })
        };
        let unicast_peers = addresses(&raw.unicast_peers, "unicast_peers")?;
        let mut allowed_peers = addresses(&raw.peers, "peers")?;
        if allowed_peers.is_empty() {
            allowed_peers = unicast_peers.clone();
        }
        let fast_detect = match &raw.fast_detect {
            None => None,
            Some(fast) if version == Version::V2 => {
                return Err(self.error(
                    fast.span(),
                    "fast_detect",
                    "needs version = 3: a VRRPv2 advert states its interval in whole seconds, so a v2 peer cannot tell a fast stream from a master advertising once a second, and VRRPv2 is here only for peers that speak nothing else; use version = 3 (keepalived speaks it too)",
                ))
            }
            Some(fast) => {
                let interval = self.duration(&fast.get_ref().interval, "fast_detect.interval")?;
                if interval < Duration::from_micros(100) || interval >= advert_interval {
                    return Err(self.error(fast.get_ref().interval.span(), "fast_detect.interval", &format!("must be at least 100us and shorter than advert_interval ({advert_interval:?})")));
                }
                let spanned = &fast.get_ref().multiplier;
                let multiplier = match spanned.get_ref() {
                    RawCountOrAuto::Word(word) if word == "auto" => Multiplier::Auto,
                    RawCountOrAuto::Word(word) => {
                        return Err(self.error(spanned.span(), "fast_detect.multiplier", &format!("`{word}` is not allowed; a whole number of intervals (2 to 255) or \"auto\"")));
                    }
                    RawCountOrAuto::Count(n) => {
                        let count = Spanned::new(spanned.span(), *n);
                        Multiplier::Fixed(self.integer(&count, "fast_detect.multiplier", 2, 255)? as u32)
                    }
                };
                Some(FastDetect {
                    interval,
                    multiplier,
                })
            }
        };
        let repeat = match &raw.garp_master_repeat {
            None => 5,
            Some(r) => self.integer(r, "garp_master_repeat", 1, 255)? as u32,
        };
        let delay = self.duration_or(
            &raw.garp_master_delay,
            "garp_master_delay",
            Duration::from_secs(5),
        )?;
        let mut heartbeats: Vec<HeartbeatLink> = Vec::new();
        for link in &raw.heartbeat {
            let link_interface =
                self.interface_name(&link.get_ref().interface, "heartbeat.interface")?;
            if link_interface == interface
                || heartbeats.iter().any(|h| h.interface == link_interface)
            {
                return Err(self.error(
                    link.get_ref().interface.span(),
                    "heartbeat.interface",
                    &format!("`{link_interface}` is already one of this instance's links"),
                ));
            }
            // The peer is one server seen through several links: its
            // adverts on each must be recognised as the same master.
            if allowed_peers.len() != 1 {
                return Err(self.error(
                    link.span(),
                    "heartbeat",
                    &format!("heartbeat links are for a pair: set `peers` (or `unicast_peers`) to the one peer's address on `{interface}`"),
                ));
            }
            let peer = addresses(std::slice::from_ref(&link.get_ref().peer), "heartbeat.peer")?[0];
            heartbeats.push(HeartbeatLink {
                interface: link_interface,
                peer,
            });
        }
        let mut trackers: Vec<TrackConfig> = Vec::new();
        for entry in raw.track {
            let tracker = self.tracker(entry, priority)?;
            if trackers.iter().any(|t| t.name == tracker.name) {
                return Err(ConfigError {
                    file: self.file.to_path_buf(),
                    line: tracker.line,
                    key: "track.name".to_string(),
                    message: format!(
                        "`{}` names two trackers of this instance; give one a `name`",
                        tracker.name
                    ),
                });
            }
            trackers.push(tracker);
        }
        Ok(InstanceConfig {
            name,
            interface,
            vrid,
            priority,
            version,
            advert_interval,
            auth,
            virtual_ips,
            preempt: raw.preempt.unwrap_or(true),
            unicast_peers,
            allowed_peers,
            fast_detect,
            garp: Garp { repeat, delay },
            heartbeats,
            trackers,
        })
    }

    /// `[[sync_group]]`: at least two instances that exist, none in two
    /// groups.
    pub(super) fn sync_groups(
        &self,
        raw: Vec<Spanned<RawSyncGroup>>,
        instances: &[InstanceConfig],
    ) -> Result<Vec<SyncGroupConfig>, ConfigError> {
        let mut groups: Vec<SyncGroupConfig> = Vec::new();
        for entry in raw {
            let entry = entry.into_inner();
            let name = entry.name.get_ref().trim().to_string();
            if !plain_name(&name) {
                return Err(self.error(entry.name.span(), "sync_group.name", "must be 1 to 64 letters, digits, `_`, `-` or `.`, not starting with `.`"));
            }
            if groups.iter().any(|g| g.name == name) {
                return Err(self.error(entry.name.span(), "sync_group.name", &format!("`{name}` names two sync groups")));
            }
            let span = entry.instances.span();
            let members = entry.instances.into_inner();
            if members.len() < 2 {
                return Err(self.error(span, "sync_group.instances", "a sync group needs at least two instances"));
            }
            for (k, member) in members.iter().enumerate() {
                if !instances.iter().any(|i| &i.name == member) {
                    let names: Vec<&str> = instances.iter().map(|i| i.name.as_str()).collect();
                    return Err(self.error(span, "sync_group.instances", &format!("no instance named `{member}`; defined: {}", names.join(", "))));
                }
                if members[..k].contains(member) {
                    return Err(self.error(span, "sync_group.instances", &format!("`{member}` is listed twice")));
                }
                if let Some(other) = groups.iter().find(|g| g.instances.contains(member)) {
                    return Err(self.error(span, "sync_group.instances", &format!("`{member}` is already in sync group `{}`; an instance is in one group at most", other.name)));
                }
            }
            groups.push(SyncGroupConfig { name, instances: members });
        }
        Ok(groups)
    }

    pub(super) fn roles(
        &self,
        raw: RawRoles,
        instances: &[InstanceConfig],
        groups: &[SyncGroupConfig],
    ) -> Result<RolesConfig, ConfigError> {
        // A group's members move together: the roles follow its first.
        let (instance, span) = match (&raw.instance, &raw.sync_group) {
            (Some(instance), None) => (instance.get_ref().clone(), instance.span()),
            (None, Some(group)) => match groups.iter().find(|g| &g.name == group.get_ref()) {
                Some(found) => (found.instances[0].clone(), group.span()),
                None => {
                    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
                    return Err(self.error(group.span(), "roles.sync_group", &format!("no sync group named `{}`; defined: {}", group.get_ref(), if names.is_empty() { "none".to_string() } else { names.join(", ") })));
                }
            },
            (Some(_), Some(group)) => {
                return Err(self.error(group.span(), "roles.sync_group", "give roles.instance or roles.sync_group, not both"))
            }
            (None, None) => {
                return Err(self.error(raw.master.span(), "roles.instance", "missing: the instance (or sync_group) whose state drives the switch"))
            }
        };
        if !instances.iter().any(|i| i.name == instance) {
            let names: Vec<&str> = instances.iter().map(|i| i.name.as_str()).collect();
            return Err(self.error(
                span,
                "roles.instance",
                &format!(
                    "no instance named `{instance}`; defined: {}",
                    names.join(", ")
                ),
            ));
        }
        let selector = |raw: &Spanned<RawSelector>, key: &str| -> Result<Selector, ConfigError> {
            match (&raw.get_ref().compose_project, &raw.get_ref().labels) {
                (Some(project), None) if !project.is_empty() => Ok(Selector::ComposeProject(project.clone())),
                (None, Some(labels)) if !labels.is_empty() => Ok(Selector::Labels(labels.clone())),
                _ => Err(self.error(raw.span(), key, "give exactly one of compose_project = \"NAME\" or labels = { key = \"value\" }")),
            }
        };
        let master = selector(&raw.master, "roles.master")?;
        let backup = selector(&raw.backup, "roles.backup")?;
        if master == backup {
            return Err(self.error(
                raw.backup.span(),
                "roles.backup",
                "selects the same containers as roles.master",
            ));
        }
        Ok(RolesConfig {
            instance,
            docker_socket: PathBuf::from(
                raw.docker_socket
                    .unwrap_or_else(|| "/var/run/docker.sock".to_string()),
            ),
            master,
            backup,
            stop_timeout: self.stop_timeout(&raw.stop_timeout)?,
            demote_delay: self.duration_or(
                &raw.demote_delay,
                "roles.demote_delay",
                Duration::from_secs(10),
            )?,
            start_timeout: self.positive_duration_or(
                &raw.start_timeout,
                "roles.start_timeout",
                Duration::from_secs(60),
                "no container would be given time to start",
            )?,
            master_processes: raw
                .master_process
                .into_iter()
                .map(|p| {
                    let span = p.span();
                    let argv = p.into_inner().run;
                    if argv.first().is_some_and(|a| a.starts_with('/')) {
                        Ok(argv)
                    } else {
                        Err(self.error(
                            span,
                            "roles.master_process.run",
                            "must be an argv whose first element is an absolute path (no shell)",
                        ))
                    }
                })
                .collect::<Result<_, _>>()?,
        })
    }

    pub(super) fn hook(&self, raw: Spanned<RawHook>) -> Result<Hook, ConfigError> {
        let span = raw.span();
        let raw = raw.into_inner();
        let action = match (raw.remove, raw.run) {
            (Some(glob), None) if glob.starts_with('/') => HookAction::Remove(glob),
            (Some(_), None) => {
                return Err(self.error(
                    span,
                    "hooks.before_promote.remove",
                    "must be an absolute path or glob",
                ))
            }
            (None, Some(argv)) if !argv.is_empty() && argv[0].starts_with('/') => {
                HookAction::Run(argv)
            }
            (None, Some(_)) => {
                return Err(self.error(
                    span,
                    "hooks.before_promote.run",
                    "must be an argv whose first element is an absolute path (no shell)",
                ))
            }
            _ => {
                return Err(self.error(
                    span,
                    "hooks.before_promote",
                    "give exactly one of remove = \"/path/glob\" or run = [\"/path\", \"arg\"]",
                ))
            }
        };
        let timeout = self.positive_duration_or(
            &raw.timeout,
            "hooks.before_promote.timeout",
            Duration::from_secs(30),
            "the hook would be killed before it starts",
        )?;
        Ok(Hook {
            action,
            timeout,
            blocking: raw.blocking.unwrap_or(true),
        })
    }

    /// `docker stop` takes whole seconds: "1500ms" was truncated to 1 s and
    /// "500ms" to 0 s (kill at once).
    fn stop_timeout(&self, value: &Option<Spanned<String>>) -> Result<Duration, ConfigError> {
        let timeout = self.duration_or(value, "roles.stop_timeout", Duration::from_secs(5))?;
        match value {
            Some(text) if timeout.is_zero() || timeout.subsec_nanos() != 0 => Err(self.error(
                text.span(),
                "roles.stop_timeout",
                "must be a whole number of seconds, at least \"1s\" (docker stop counts in seconds; 0 kills the containers at once)",
            )),
            _ => Ok(timeout),
        }
    }
}

/// The last path component, made a tracker name (`/usr/bin/chk mongo` ->
/// `chk_mongo`).
pub(super) fn base_name(path: &str) -> String {
    let last = path.rsplit('/').next().unwrap_or(path).trim_start_matches('.');
    let name: String = last
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '.') { c } else { '_' })
        .take(64)
        .collect();
    if name.is_empty() { "tracker".to_string() } else { name }
}

/// The names shown in `status` lines, metrics labels and the journal
/// (instances, trackers): a newline or a quote would forge lines there.
pub(super) fn plain_name(name: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    !name.is_empty() && name.len() <= 64 && !name.starts_with('.') && name.chars().all(allowed)
}
