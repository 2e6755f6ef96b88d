//! The daemon's configuration: TOML in, validated values out.
//!
//! Owns: the config file format, its defaults and every rule about what is
//! allowed. A bad file is refused whole with `file:line: key: what is wrong,
//! what is allowed`; nothing downstream sees a half-valid config. Must not:
//! touch the system beyond reading: `parse` is pure; `load` also stats the
//! file and what trackers name (the instances' own interfaces are checked
//! when the daemon starts).

use std::{
    collections::HashSet,
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use crate::vrrp::{Auth, FastDetect, Multiplier, Params, Version};

pub const DEFAULT_CONTROL_SOCKET: &str = "/run/wimark-ha/control.sock";

/// A config error: where, which key, what is wrong and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => write!(f, "{}: {}: {}", self.file.display(), self.key, self.message),
            line => write!(
                f,
                "{}:{line}: {}: {}",
                self.file.display(),
                self.key,
                self.message
            ),
        }
    }
}

/// Something legal but probably not what was meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub line: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.key, self.message)
    }
}

mod ap_recovery;
mod context;
mod model;
mod raw;
#[cfg(test)]
mod reference;
mod sections;
#[cfg(test)]
mod tests;
mod tracker;
mod witness;

use context::Context;
pub use model::*;
use raw::*;

/// The longest config read: far more than any real one, and `/dev/zero`
/// or a runaway generator cannot eat the memory.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads and validates `path`. The file names programs the daemon runs as
/// root, so it is trusted as sshd's StrictModes trusts its files: a regular
/// file (a FIFO hung the read, a device never ended it), owned by root (or
/// by the user running us), writable by nobody else, at most
/// [`MAX_CONFIG_BYTES`].
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    use std::io::Read as _;
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let file_error = |message: String| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        key: "file".to_string(),
        message,
    };
    // stat before open: opening a FIFO blocks until a writer comes.
    let meta = std::fs::metadata(path).map_err(|e| file_error(format!("cannot read it: {e}")))?;
    if !meta.is_file() {
        return Err(file_error(
            "is not a regular file (a FIFO or a device is never a config)".to_string(),
        ));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(file_error(format!(
            "is {} bytes; a config is at most {MAX_CONFIG_BYTES}",
            meta.len()
        )));
    }
    let our_uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != our_uid {
        return Err(file_error(format!(
            "is owned by uid {}: it names programs the daemon runs as root, so only root may own it; chown root {}",
            meta.uid(),
            path.display()
        )));
    }
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(file_error(format!(
            "is world-writable (mode {:o}): anyone could make the daemon run their program as root; chmod o-w {}",
            mode & 0o7777,
            path.display()
        )));
    }
    if mode & 0o020 != 0 {
        return Err(file_error(format!(
            "is group-writable (mode {:o}): the group could make the daemon run their program as root; chmod g-w {}",
            mode & 0o7777,
            path.display()
        )));
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| file_error(format!("cannot read it: {e}")))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(file_error(format!("is over {MAX_CONFIG_BYTES} bytes")));
    }
    let config = parse(&text, path)?;
    trackers_on_this_host(&config, path)?;
    // `run` would refuse it (it removes only a stale socket): say so now.
    let socket = &config.daemon.control_socket;
    if let Ok(meta) = std::fs::symlink_metadata(socket) {
        use std::os::unix::fs::FileTypeExt as _;
        if !meta.file_type().is_socket() {
            let cx = Context { text: &text, file: path };
            return Err(ConfigError {
                file: path.to_path_buf(),
                // The key's line, or 0 for the default path.
                line: text.find("control_socket").map_or(0, |at| cx.line_of(at)),
                key: "control_socket".to_string(),
                message: format!(
                    "{} exists and is not a socket: `run` would not remove it; name a free path",
                    socket.display()
                ),
            });
        }
    }
    Ok(config)
}

/// What a tracker names must be here: a script that is not an executable
/// file, or an interface the kernel does not know, would fail (or FAULT the
/// instance) at once; check-config and `run` say so first.
fn trackers_on_this_host(config: &Config, path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt as _;
    for instance in &config.instances {
        for tracker in &instance.trackers {
            let refuse = |key: &str, message: String| ConfigError {
                file: path.to_path_buf(),
                line: tracker.line,
                key: key.to_string(),
                message,
            };
            match &tracker.kind {
                TrackKind::Script(script) => {
                    let program = &script.argv[0];
                    match std::fs::metadata(program) {
                        Err(e) => {
                            return Err(refuse(
                                "track.script",
                                format!("{program}: {e} (tracker `{}`)", tracker.name),
                            ))
                        }
                        Ok(meta) if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 => {
                            return Err(refuse(
                                "track.script",
                                format!("{program} is not an executable file (tracker `{}`)", tracker.name),
                            ))
                        }
                        Ok(_) => {}
                    }
                }
                TrackKind::Interface(interface) => {
                    if nix::net::if_::if_nametoindex(interface.as_str()).is_err() {
                        return Err(refuse(
                            "track.interface",
                            format!("no interface `{interface}` on this host (tracker `{}`)", tracker.name),
                        ));
                    }
                }
                // A missing file reads as 0, as keepalived's track_file.
                TrackKind::File(_) => {}
                // Docker may start after us: check-config asks it
                // (`containers_on_this_host`); `run` does not wait for it.
                TrackKind::Container(_) => {}
                // A process not running yet is a failed tracker, not a
                // config error.
                TrackKind::Process(_) => {}
            }
        }
    }
    Ok(())
}

/// Deserialises a TOML file of another shape (e.g. an adapter's), with
/// errors that name file, line and key as the daemon's own config does.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &Path,
) -> Result<T, ConfigError> {
    let cx = Context { text, file };
    toml::from_str(text).map_err(|e| cx.toml_error(&e))
}

/// Validates `text` as if read from `file`.
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let cx = Context { text, file };
    let raw: RawConfig = toml::from_str(text).map_err(|e| cx.toml_error(&e))?;
    // Relative paths would land wherever the daemon was started from.
    for (key, path) in [
        ("control_socket", &raw.daemon.control_socket),
        ("state_dir", &raw.daemon.state_dir),
    ] {
        if let Some(path) = path {
            if !path.get_ref().starts_with('/') {
                return Err(cx.error(
                    path.span(),
                    key,
                    &format!(
                        "`{}` is not an absolute path; write the full path, e.g. \"{}\"",
                        path.get_ref(),
                        if key == "state_dir" { DEFAULT_STATE_DIR } else { DEFAULT_CONTROL_SOCKET }
                    ),
                ));
            }
        }
    }
    let control_socket = raw
        .daemon
        .control_socket
        .map(|s| PathBuf::from(s.into_inner()))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL_SOCKET));
    if raw.instance.is_empty() {
        return Err(ConfigError {
            file: file.to_path_buf(),
            line: 0,
            key: "instance".to_string(),
            message: "no [[instance]] defined; at least one is needed".to_string(),
        });
    }
    let mut warnings = Vec::new();
    let mut instances: Vec<InstanceConfig> = Vec::new();
    let mut names = HashSet::new();
    let mut routers = HashSet::new();
    let mut vip_owners: Vec<(IpAddr, String)> = Vec::new();
    for raw in raw.instance {
        let span = raw.span();
        let vips_span = raw.get_ref().virtual_ips.span();
        let instance = cx.instance(raw.into_inner(), &mut warnings)?;
        if !names.insert(instance.name.clone()) {
            return Err(cx.error(
                span,
                "name",
                &format!(
                    "instance name `{}` is used twice; names must be unique",
                    instance.name
                ),
            ));
        }
        let links = std::iter::once(&instance.interface)
            .chain(instance.heartbeats.iter().map(|h| &h.interface));
        for interface in links {
            if !routers.insert((interface.clone(), instance.vrid)) {
                return Err(cx.error(
                    span.clone(),
                    "vrid",
                    &format!(
                        "VRID {} is used twice on `{interface}` (as an instance's interface or heartbeat link); one instance per VRID and link",
                        instance.vrid
                    ),
                ));
            }
        }
        // Two instances holding one address: the demotion of one would
        // remove the address the other still reports holding.
        for vip in &instance.virtual_ips {
            if let Some((_, owner)) = vip_owners.iter().find(|(a, _)| *a == vip.address) {
                return Err(cx.error(
                    vips_span.clone(),
                    "virtual_ips",
                    &format!(
                        "{} is already a virtual IP of instance {owner}; one address belongs to one instance",
                        vip.address
                    ),
                ));
            }
            vip_owners.push((vip.address, instance.name.clone()));
        }
        instances.push(instance);
    }
    let sync_groups = cx.sync_groups(raw.sync_group, &instances)?;
    let roles = match raw.roles {
        None => None,
        Some(roles) => Some(cx.roles(roles.into_inner(), &instances, &sync_groups)?),
    };
    let mut before_promote = Vec::new();
    for hook in raw.hooks.before_promote {
        if roles.is_none() {
            return Err(cx.error(
                hook.span(),
                "hooks.before_promote",
                "hooks run when the containers are promoted: they need a [roles] section (without one they would never run)",
            ));
        }
        before_promote.push(cx.hook(hook)?);
    }
    let notify = match raw.notify {
        None => None,
        Some(notify) => {
            let script = notify.script.get_ref();
            if !script.starts_with('/') {
                return Err(cx.error(
                    notify.script.span(),
                    "notify.script",
                    "must be an absolute path (the seed's relative paths broke)",
                ));
            }
            let timeout = cx.positive_duration_or(
                &notify.timeout,
                "notify.timeout",
                Duration::from_secs(30),
                "the script would be killed before it starts",
            )?;
            Some(NotifyConfig {
                script: PathBuf::from(script),
                timeout,
            })
        }
    };
    let fencing = match raw.fencing {
        None => None,
        Some(fencing) => {
            if fencing.command.get_ref().is_empty() {
                return Err(cx.error(
                    fencing.command.span(),
                    "fencing.command",
                    "must name a program (argv, no shell), e.g. [\"ssh\", \"root@10.10.10.2\", \"docker\", \"stop\", \"mongo\"]",
                ));
            }
            if roles.is_none() {
                return Err(cx.error(
                    fencing.command.span(),
                    "fencing",
                    "fencing decides whether the containers are promoted: it needs a [roles] section",
                ));
            }
            let timeout = cx.positive_duration_or(
                &fencing.timeout,
                "fencing.timeout",
                Duration::from_secs(10),
                "the fencing command would always time out, and the containers never be promoted",
            )?;
            Some(FencingConfig {
                command: fencing.command.into_inner(),
                timeout,
            })
        }
    };
    let restart_hold = match &raw.daemon.restart_hold {
        None => None,
        Some(text) => {
            let hold = cx.duration(text, "restart_hold")?;
            // The hold travels as a v3 Max Adver Int of a third of it
            // (12 bits of centiseconds): 40.95 s x 3 at most.
            if hold < Duration::from_millis(100) || hold > Duration::from_millis(3 * 40_950) {
                return Err(cx.error(
                    text.span(),
                    "restart_hold",
                    "must be 100ms to 122s (it travels as a VRRPv3 advert interval of a third of it)",
                ));
            }
            if let Some(v2) = instances.iter().find(|i| i.version == Version::V2) {
                return Err(cx.error(
                    text.span(),
                    "restart_hold",
                    &format!("instance {} is VRRPv2, whose peers must match a fixed interval: a restart hold needs VRRPv3", v2.name),
                ));
            }
            Some(hold)
        }
    };
    let advert_senders = match &raw.daemon.advert_senders {
        None => AdvertSenders::Auto,
        Some(spanned) => match spanned.get_ref() {
            RawCountOrAuto::Word(word) if word == "auto" => AdvertSenders::Auto,
            RawCountOrAuto::Word(word) => {
                return Err(cx.error(
                    spanned.span(),
                    "advert_senders",
                    &format!("`{word}` is not allowed; a number of threads (1 to 16) or \"auto\""),
                ))
            }
            RawCountOrAuto::Count(n) => {
                let count = Spanned::new(spanned.span(), *n);
                AdvertSenders::Count(cx.integer(&count, "advert_senders", 1, 16)? as usize)
            }
        },
    };
    let state_dir = raw
        .daemon
        .state_dir
        .map(|s| PathBuf::from(s.into_inner()))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    let metrics = match raw.metrics {
        None => None,
        Some(metrics) => {
            let listen: std::net::SocketAddr = metrics.listen.get_ref().parse().map_err(|_| {
                cx.error(
                    metrics.listen.span(),
                    "metrics.listen",
                    &format!(
                        "`{}` is not an address:port (e.g. 127.0.0.1:9650)",
                        metrics.listen.get_ref()
                    ),
                )
            })?;
            if !listen.ip().is_loopback() {
                warnings.push(ConfigWarning {
                    line: cx.line_of(metrics.listen.span().start),
                    key: "metrics.listen".to_string(),
                    message: format!("{listen} is reachable from other hosts: the metrics show the pair's state and traffic"),
                });
            }
            Some(MetricsConfig { listen })
        }
    };
    let peer = match raw.peer {
        None => None,
        Some(peer) => Some(PeerConfig {
            address: peer.address.get_ref().parse().map_err(|_| {
                cx.error(
                    peer.address.span(),
                    "peer.address",
                    &format!("`{}` is not an IP address", peer.address.get_ref()),
                )
            })?,
            ssh_user: peer.ssh_user.filter(|u| !u.is_empty()),
        }),
    };
    let ap_recovery = match raw.ap_recovery {
        None => None,
        Some(raw) => Some(cx.ap_recovery(raw, &instances, peer.as_ref())?),
    };
    // Container trackers ask the Docker that the role switch asks.
    if let Some(roles) = &roles {
        for instance in &mut instances {
            for tracker in &mut instance.trackers {
                if let TrackKind::Container(track) = &mut tracker.kind {
                    track.docker_socket = roles.docker_socket.clone();
                }
            }
        }
    }
    let witness = cx.witness(raw.witness, &roles)?;
    Ok(Config {
        witness,
        ap_recovery,
        daemon: DaemonConfig {
            control_socket,
            state_dir,
            restart_hold,
            advert_senders,
        },
        instances,
        roles,
        before_promote,
        notify,
        fencing,
        peer,
        metrics,
        sync_groups,
        warnings,
    })
}
