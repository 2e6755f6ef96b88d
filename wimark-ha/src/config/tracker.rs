//! `[[instance.track]]`: one tracker's kind (script, process, file,
//! interface, container) and keepalived's weight rules.

use super::*;
use super::{
    context::Context,
    raw::*,
    sections::{base_name, plain_name},
};

impl Context<'_> {
    /// One `[[instance.track]]`, keepalived's rules: weight -254..=254,
    /// default 0 (FAULT); none on the address owner, whose priority is its
    /// ownership (keepalived refuses the same).
    pub(super) fn tracker(
        &self,
        raw: Spanned<RawTrack>,
        priority: u8,
    ) -> Result<TrackConfig, ConfigError> {
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
                return Err(self.error(
                    at,
                    key,
                    "is a script tracker's setting; this tracker is not a script",
                ));
            }
        }
        if !matches!(kind, TrackKind::Container(_)) {
            if let Some((key, Some(at))) = container_only.into_iter().find(|(_, s)| s.is_some()) {
                return Err(self.error(
                    at,
                    key,
                    "is a container tracker's setting; this tracker is not a container",
                ));
            }
        }
        if !matches!(kind, TrackKind::Process(_)) {
            if let Some((key, Some(at))) = process_only.into_iter().find(|(_, s)| s.is_some()) {
                return Err(self.error(
                    at,
                    key,
                    "is a process tracker's setting; this tracker is not a process",
                ));
            }
        }
        if !matches!(kind, TrackKind::Container(_) | TrackKind::Process(_)) {
            if let Some(at) = grace_span {
                return Err(self.error(
                    at,
                    "track.grace",
                    "is a container or process tracker's setting",
                ));
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
            None => {
                match &kind {
                    TrackKind::Interface(interface) => interface.clone(),
                    TrackKind::Script(script) => base_name(&script.argv[0]),
                    TrackKind::File(path) => base_name(&path.to_string_lossy()),
                    TrackKind::Process(track) => track.name.clone(),
                    TrackKind::Container(track) => match &track.target {
                        ContainerTarget::Name(name) => name.clone(),
                        // A label is no name: name it.
                        ContainerTarget::Label(_) => return Err(self.error(
                            span,
                            "track.name",
                            "a container_label tracker needs a name (e.g. name = \"master_stack\")",
                        )),
                    },
                }
            }
        };
        Ok(TrackConfig {
            name,
            kind,
            weight,
            line,
        })
    }
}
