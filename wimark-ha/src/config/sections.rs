//! The rules of each section: `[[instance]]`, `[roles]` and its hooks,
//! `[ap_recovery]` — raw shapes in, model values or a `ConfigError` out.

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

    /// One `[[instance.track]]`, keepalived's rules: weight -254..=254,
    /// default 0 (FAULT); none on the address owner, whose priority is its
    /// ownership (keepalived refuses the same).
    fn tracker(&self, raw: Spanned<RawTrack>, priority: u8) -> Result<TrackConfig, ConfigError> {
        // toml's span of an array-of-tables entry does not point at the
        // entry: its first key does.
        let raw = raw.into_inner();
        let span = [
            raw.name.as_ref().map(|v| v.span()),
            raw.interface.as_ref().map(|v| v.span()),
            raw.script.as_ref().map(|v| v.span()),
            raw.file.as_ref().map(|v| v.span()),
            raw.weight.as_ref().map(|v| v.span()),
            raw.interval.as_ref().map(|v| v.span()),
            raw.timeout.as_ref().map(|v| v.span()),
            raw.rise.as_ref().map(|v| v.span()),
            raw.fall.as_ref().map(|v| v.span()),
            raw.container.as_ref().map(|v| v.span()),
            raw.container_label.as_ref().map(|v| v.span()),
            raw.grace.as_ref().map(|v| v.span()),
            raw.when.as_ref().map(|v| v.span()),
            raw.process.as_ref().map(|v| v.span()),
            raw.quorum.as_ref().map(|v| v.span()),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|s| s.start)
        .unwrap_or(0..0);
        let line = self.line_of(span.start);
        let weight = match &raw.weight {
            None => 0,
            Some(w) => self.integer(w, "track.weight", -254, 254)? as i32,
        };
        if priority == 255 && weight != 0 {
            return Err(self.error(
                raw.weight.as_ref().map_or(span.clone(), |w| w.span()),
                "track.weight",
                "the address owner (priority 255) keeps its priority: a weight would change what owning the addresses means (RFC 5798 §5.2.4); use weight 0 (FAULT) or a priority below 255",
            ));
        }
        let script_only = [
            ("track.interval", raw.interval.as_ref().map(|v| v.span())),
            ("track.timeout", raw.timeout.as_ref().map(|v| v.span())),
            ("track.rise", raw.rise.as_ref().map(|v| v.span())),
            ("track.fall", raw.fall.as_ref().map(|v| v.span())),
        ];
        let container_only = [("track.when", raw.when.as_ref().map(|v| v.span()))];
        let process_only = [("track.quorum", raw.quorum.as_ref().map(|v| v.span()))];
        let grace_span = raw.grace.as_ref().map(|v| v.span());
        let process = match raw.process {
            None => None,
            Some(name) => {
                let text = name.get_ref().trim().to_string();
                if text.is_empty() || text.contains('/') || text.chars().any(|c| c.is_control()) {
                    return Err(self.error(
                        name.span(),
                        "track.process",
                        "must be a process name (the kernel's comm or the program's file name, no path), e.g. \"mosquitto\"",
                    ));
                }
                Some(ProcessTrack {
                    name: text,
                    quorum: match &raw.quorum {
                        None => 1,
                        Some(n) => self.integer(n, "track.quorum", 1, 1000)? as u32,
                    },
                    grace: self.duration_or(&raw.grace, "track.grace", Duration::ZERO)?,
                })
            }
        };
        let container = match (raw.container, raw.container_label) {
            (Some(_), Some(label)) => {
                return Err(self.error(
                    label.span(),
                    "track.container_label",
                    "give container = \"name\" or container_label = \"key=value\", not both",
                ))
            }
            (Some(name), None) => {
                let text = name.get_ref().trim().trim_start_matches('/').to_string();
                if text.is_empty()
                    || !text
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
                {
                    return Err(self.error(
                        name.span(),
                        "track.container",
                        "must be a container name (letters, digits, `_`, `.`, `-`), e.g. \"wimark-mongo\"",
                    ));
                }
                Some(ContainerTarget::Name(text))
            }
            (None, Some(label)) => {
                let text = label.get_ref().trim().to_string();
                let key = text.split('=').next().unwrap_or_default();
                if key.is_empty() || text.chars().any(char::is_whitespace) {
                    return Err(self.error(
                        label.span(),
                        "track.container_label",
                        "must be `key=value` or `key`, e.g. \"com.wimark.stack=master\"",
                    ));
                }
                Some(ContainerTarget::Label(text))
            }
            (None, None) => None,
        };
        if process.is_some() && container.is_some() {
            return Err(self.error(
                span,
                "track",
                "give exactly one of interface, script, file, process, container or container_label",
            ));
        }
        let kind = match (raw.interface, raw.script, raw.file) {
            (None, None, None) if process.is_some() => TrackKind::Process(process.expect("checked above")),
            _ if process.is_some() => {
                return Err(self.error(
                    span,
                    "track",
                    "give exactly one of interface, script, file, process, container or container_label",
                ))
            }
            (None, None, None) if container.is_some() => {
                let always = match &raw.when {
                    None => false,
                    Some(when) => match when.get_ref().as_str() {
                        "master" => false,
                        "always" => true,
                        other => {
                            return Err(self.error(
                                when.span(),
                                "track.when",
                                &format!("`{other}` is not allowed; \"master\" (judged while this node's master stack is in force, the default) or \"always\""),
                            ))
                        }
                    },
                };
                TrackKind::Container(ContainerTrack {
                    target: container.expect("checked above"),
                    grace: self.duration_or(&raw.grace, "track.grace", Duration::from_secs(10))?,
                    always,
                    // `[roles] docker_socket` replaces it once known.
                    docker_socket: PathBuf::from("/var/run/docker.sock"),
                })
            }
            _ if container.is_some() => {
                return Err(self.error(
                    span,
                    "track",
                    "give exactly one of interface, script, file, container or container_label",
                ))
            }
            (Some(interface), None, None) => {
                TrackKind::Interface(self.interface_name(&interface, "track.interface")?)
            }
            (None, Some(argv), None) => {
                if !argv.get_ref().first().is_some_and(|p| p.starts_with('/')) {
                    return Err(self.error(
                        argv.span(),
                        "track.script",
                        "must be an argv whose first element is an absolute path (no shell), e.g. [\"/usr/local/bin/chk_mongo\"]",
                    ));
                }
                let interval = self.positive_duration_or(
                    &raw.interval,
                    "track.interval",
                    Duration::from_secs(1),
                    "the script would run without a pause",
                )?;
                let timeout = self.positive_duration_or(
                    &raw.timeout,
                    "track.timeout",
                    interval,
                    "the script would be killed before it starts",
                )?;
                let count = |value: &Option<Spanned<i64>>, key: &str| match value {
                    None => Ok(1),
                    Some(n) => self.integer(n, key, 1, 1000).map(|n| n as u32),
                };
                TrackKind::Script(ScriptTrack {
                    argv: argv.into_inner(),
                    interval,
                    timeout,
                    rise: count(&raw.rise, "track.rise")?,
                    fall: count(&raw.fall, "track.fall")?,
                    init_fail: raw.init_fail.unwrap_or(false),
                })
            }
            (None, None, Some(file)) => {
                if !file.get_ref().starts_with('/') {
                    return Err(self.error(
                        file.span(),
                        "track.file",
                        "must be an absolute path (a file holding a number)",
                    ));
                }
                TrackKind::File(PathBuf::from(file.into_inner()))
            }
            _ => {
                return Err(self.error(
                    span,
                    "track",
                    "give exactly one of interface = \"eth1\", script = [\"/path\", \"arg\"], file = \"/path\", process = \"name\", container = \"name\" or container_label = \"key=value\"",
                ))
            }
        };
        if !matches!(kind, TrackKind::Script(_)) {
            if let Some((key, Some(at))) = script_only.into_iter().find(|(_, s)| s.is_some()) {
                return Err(self.error(at, key, "is a script tracker's setting; this tracker is not a script"));
            }
        }
        if !matches!(kind, TrackKind::Container(_)) {
            if let Some((key, Some(at))) = container_only.into_iter().find(|(_, s)| s.is_some()) {
                return Err(self.error(at, key, "is a container tracker's setting; this tracker is not a container"));
            }
        }
        if !matches!(kind, TrackKind::Process(_)) {
            if let Some((key, Some(at))) = process_only.into_iter().find(|(_, s)| s.is_some()) {
                return Err(self.error(at, key, "is a process tracker's setting; this tracker is not a process"));
            }
        }
        if !matches!(kind, TrackKind::Container(_) | TrackKind::Process(_)) {
            if let Some(at) = grace_span {
                return Err(self.error(at, "track.grace", "is a container or process tracker's setting"));
            }
        }
        let name = match raw.name {
            Some(name) => {
                let text = name.get_ref().trim().to_string();
                if !plain_name(&text) {
                    return Err(self.error(
                        name.span(),
                        "track.name",
                        "must be 1 to 64 letters, digits, `_`, `-` or `.`, not starting with `.` (keepalived's chk_mongo is fine)",
                    ));
                }
                text
            }
            // keepalived's names: the script's own, the interface's.
            None => match &kind {
                TrackKind::Interface(interface) => interface.clone(),
                TrackKind::Script(script) => base_name(&script.argv[0]),
                TrackKind::File(path) => base_name(&path.to_string_lossy()),
                TrackKind::Process(track) => track.name.clone(),
                TrackKind::Container(track) => match &track.target {
                    ContainerTarget::Name(name) => name.clone(),
                    // A label is no name: name it.
                    ContainerTarget::Label(_) => {
                        return Err(self.error(
                            span,
                            "track.name",
                            "a container_label tracker needs a name (e.g. name = \"master_stack\")",
                        ))
                    }
                },
            },
        };
        Ok(TrackConfig {
            name,
            kind,
            weight,
            line,
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

    pub(super) fn ap_recovery(
        &self,
        raw: RawApRecovery,
        instances: &[InstanceConfig],
        peer: Option<&PeerConfig>,
    ) -> Result<ApRecoveryConfig, ConfigError> {
        let instance = match &raw.instance {
            Some(name) => {
                if !instances.iter().any(|i| &i.name == name.get_ref()) {
                    return Err(self.error(
                        name.span(),
                        "ap_recovery.instance",
                        &format!("no [[instance]] is named `{}`", name.get_ref()),
                    ));
                }
                name.get_ref().clone()
            }
            None => instances
                .first()
                .map(|i| i.name.clone())
                .unwrap_or_default(),
        };
        let key = raw.sync_key_file.get_ref();
        if !key.starts_with('/') {
            return Err(self.error(
                raw.sync_key_file.span(),
                "ap_recovery.sync_key_file",
                "must be an absolute path (a file of at least 16 random bytes, mode 0600, the same on both nodes)",
            ));
        }
        let sync_peer = match (&raw.sync_peer, peer) {
            (Some(text), _) => text.get_ref().parse().map_err(|_| {
                self.error(
                    text.span(),
                    "ap_recovery.sync_peer",
                    &format!("`{}` is not an IP address", text.get_ref()),
                )
            })?,
            (None, Some(peer)) => peer.address,
            (None, None) => {
                return Err(self.error(
                    raw.sync_key_file.span(),
                    "ap_recovery.sync_peer",
                    "the AP table needs a peer to go to: set sync_peer, or [peer] address",
                ))
            }
        };
        let sync_port = match &raw.sync_port {
            Some(port) => self.integer(port, "ap_recovery.sync_port", 1, 65535)? as u16,
            None => DEFAULT_AP_SYNC_PORT,
        };
        let ike_hook = match raw.ike_hook {
            None => None,
            Some(argv) if argv.get_ref().first().is_some_and(|p| p.starts_with('/')) => {
                Some(argv.into_inner())
            }
            Some(argv) => {
                return Err(self.error(
                    argv.span(),
                    "ap_recovery.ike_hook",
                    "must be an argv whose program is an absolute path, e.g. [\"/usr/sbin/wimark-ha\", \"ike-initiate\", \"--config\", \"/etc/wimark-ha/ike-initiate.toml\"]",
                ))
            }
        };
        let ike_hook_timeout = self.positive_duration_or(
            &raw.ike_hook_timeout,
            "ap_recovery.ike_hook_timeout",
            Duration::from_secs(10),
            "the hook would be killed before it starts",
        )?;
        let ike_daemon_config = match raw.ike_daemon_config {
            None => Vec::new(),
            Some(paths) => {
                if let Some(bad) = paths.get_ref().iter().find(|p| !p.starts_with('/')) {
                    return Err(self.error(
                        paths.span(),
                        "ap_recovery.ike_daemon_config",
                        &format!("`{bad}` is not an absolute path (the IKE daemon's swanctl.conf, e.g. /usr/share/wimark/ipsec/swanctl.conf)"),
                    ));
                }
                paths.into_inner().into_iter().map(PathBuf::from).collect()
            }
        };
        let ike_vici = match raw.ike_vici {
            None => None,
            Some(text) => {
                let path = text.get_ref();
                let path = path.strip_prefix("unix://").unwrap_or(path);
                if !path.starts_with('/') {
                    return Err(self.error(
                        text.span(),
                        "ap_recovery.ike_vici",
                        &format!("`{}` is not an absolute path (charon's vici socket, e.g. /var/run/charon.vici)", text.get_ref()),
                    ));
                }
                Some(PathBuf::from(path))
            }
        };
        let max_aps = match &raw.max_aps {
            Some(aps) => self.integer(
                aps,
                "ap_recovery.max_aps",
                1,
                i64::from(wimark_ha_common::abi::AP_TABLE_MAX_APS),
            )? as u32,
            None => wimark_ha_common::abi::AP_TABLE_DEFAULT_APS,
        };
        let mqtt_kick_rate = match &raw.mqtt_kick_rate {
            Some(rate) => self.integer(
                rate,
                "ap_recovery.mqtt_kick_rate",
                1,
                i64::from(crate::recovery::mqtt::MAX_KICKS_PER_SECOND),
            )? as u32,
            None => crate::recovery::mqtt::DEFAULT_KICKS_PER_SECOND,
        };
        Ok(ApRecoveryConfig {
            instance,
            sync_key_file: PathBuf::from(key),
            sync_peer,
            sync_port,
            ike_hook,
            ike_hook_timeout,
            ike_daemon_config,
            mqtt_kick: raw.mqtt_kick.unwrap_or(true),
            mqtt_kick_rate,
            ike_vici,
            max_aps,
        })
    }
}

/// The last path component, made a tracker name (`/usr/bin/chk mongo` ->
/// `chk_mongo`).
fn base_name(path: &str) -> String {
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
fn plain_name(name: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    !name.is_empty() && name.len() <= 64 && !name.starts_with('.') && name.chars().all(allowed)
}
