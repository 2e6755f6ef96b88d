//! The daemon's configuration: TOML in, validated values out.
//!
//! Owns: the config file format, its defaults and every rule about what is
//! allowed. A bad file is refused whole with `file:line: key: what is wrong,
//! what is allowed`; nothing downstream sees a half-valid config. Must not:
//! touch the system (interfaces are checked when the daemon starts).

use std::{
    collections::HashSet,
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use crate::vrrp::{Auth, FastDetect, Params, Version};

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub instances: Vec<InstanceConfig>,
    /// The container stacks that follow one instance's role, if configured.
    pub roles: Option<RolesConfig>,
    /// Run in order after VIP + GARP, before the containers switch.
    pub before_promote: Vec<Hook>,
    pub notify: Option<NotifyConfig>,
    pub fencing: Option<FencingConfig>,
    pub peer: Option<PeerConfig>,
    pub metrics: Option<MetricsConfig>,
    /// Bringing the APs back after a takeover: the AP table synced from the
    /// peer, and the IKE hook run with it.
    pub ap_recovery: Option<ApRecoveryConfig>,
    pub warnings: Vec<ConfigWarning>,
}

/// `[ap_recovery]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApRecoveryConfig {
    /// Whose takeover starts the recovery, and whose master sends the table.
    pub instance: String,
    /// The key both nodes hold (read at start; at least 16 bytes, root only).
    pub sync_key_file: PathBuf,
    /// The peer the AP table goes to and comes from (on the peer link).
    pub sync_peer: IpAddr,
    pub sync_port: u16,
    /// Run after the takeover (once the master stack is up, with [roles])
    /// with the AP list as JSON on stdin; e.g. `wimark-ha ike-initiate`.
    pub ike_hook: Option<Vec<String>>,
    pub ike_hook_timeout: Duration,
    /// The servers' IKE daemon's own configuration (swanctl.conf syntax),
    /// read by `doctor` only: a connection there that leaves MOBIKE on lets
    /// the old master move an AP's SA off the VIP on a planned switchover.
    pub ike_daemon_config: Vec<PathBuf>,
    /// Kick the APs' stale MQTT connections (challenge ACK -> RST) so that
    /// their clients reconnect at once, not at their keepalive.
    pub mqtt_kick: bool,
}

pub const DEFAULT_STATE_DIR: &str = "/var/lib/wimark-ha";

/// The AP sync's UDP port when `[ap_recovery] sync_port` is not set.
pub const DEFAULT_AP_SYNC_PORT: u16 = 9651;

/// How a stack's containers are found: created beforehand by
/// `docker-compose -p NAME up --no-start` (or by hand, with labels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `com.docker.compose.project=NAME`.
    ComposeProject(String),
    /// Every label must match.
    Labels(std::collections::BTreeMap<String, String>),
}

impl Selector {
    /// Docker `label` filters for this selector.
    pub fn label_filters(&self) -> Vec<String> {
        match self {
            Selector::ComposeProject(project) => {
                vec![format!("com.docker.compose.project={project}")]
            }
            Selector::Labels(labels) => labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label_filters().join(","))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolesConfig {
    /// The instance whose state drives the switch.
    pub instance: String,
    pub docker_socket: PathBuf,
    pub master: Selector,
    pub backup: Selector,
    pub stop_timeout: Duration,
    /// The seed's "sleep 10, then re-check" before demoting.
    pub demote_delay: Duration,
    /// How long a started container may take to be running (and healthy).
    pub start_timeout: Duration,
    /// Programs (argv, no shell) that run only while MASTER, supervised:
    /// the seed's lsyncd mirror of /usr/share/wimark follows the master.
    pub master_processes: Vec<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookAction {
    /// Remove the files matching a glob (the seed's mongo lock clean-up).
    Remove(String),
    /// Run a program: argv, no shell.
    Run(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub action: HookAction,
    pub timeout: Duration,
    /// A failed or timed-out blocking hook stops the container switch
    /// (reported); a non-blocking one is reported and the switch goes on.
    pub blocking: bool,
}

/// keepalived-compatible notify script: `SCRIPT INSTANCE NAME STATE PRIORITY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    pub script: PathBuf,
    pub timeout: Duration,
}

/// The other server of the pair, as `doctor` checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Its address on the peer link.
    pub address: IpAddr,
    /// The user for password-less ssh to it, when the peer is managed over
    /// ssh (the vendor's `USERNAME` in .env).
    pub ssh_user: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    pub control_socket: PathBuf,
    /// The failover journal's directory.
    pub state_dir: PathBuf,
    /// `wimark-ha restart` keeps mastership across a restart in place: the
    /// peer is told to wait this long for us. `None`: restart is refused.
    pub restart_hold: Option<Duration>,
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    pub listen: std::net::SocketAddr,
}

/// A virtual IP with its prefix length, as it goes on the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtualIp {
    pub address: IpAddr,
    pub prefix_len: u8,
}

impl fmt::Display for VirtualIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

/// keepalived's gratuitous ARP settings after becoming master: a burst of
/// `repeat` announcements, and another burst `delay` later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Garp {
    pub repeat: u32,
    pub delay: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceConfig {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub priority: u8,
    pub version: Version,
    pub advert_interval: Duration,
    pub auth: Auth,
    pub virtual_ips: Vec<VirtualIp>,
    pub preempt: bool,
    pub unicast_peers: Vec<IpAddr>,
    /// The only sources whose adverts count (enforced in XDP); empty means
    /// any. `peers`, or else `unicast_peers`.
    pub allowed_peers: Vec<IpAddr>,
    pub fast_detect: Option<FastDetect>,
    pub garp: Garp,
    /// More links the adverts travel on (`[[instance.heartbeat]]`): the peer
    /// is down only when it is silent on `interface` and on every one of these.
    pub heartbeats: Vec<HeartbeatLink>,
}

/// A second path between the two servers for the adverts of one instance
/// (e.g. the AP-facing link beside the peer link). Adverts go to `peer` by
/// unicast, and only `peer`'s count there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatLink {
    pub interface: String,
    /// The other server's address on that link.
    pub peer: IpAddr,
}

/// A command that makes sure the peer no longer runs the master stack
/// (e.g. over ssh), run before the containers are promoted after the peer
/// went silent. Its exit status decides whether they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FencingConfig {
    pub command: Vec<String>,
    pub timeout: Duration,
}

impl InstanceConfig {
    /// The state machine's parameters, given our primary address on the
    /// interface (found when the daemon starts).
    pub fn params(&self, primary_address: IpAddr) -> Params {
        Params {
            version: self.version,
            vrid: self.vrid,
            priority: self.priority,
            advert_interval: self.advert_interval,
            auth: self.auth,
            virtual_ips: self.virtual_ips.iter().map(|v| v.address).collect(),
            preempt: self.preempt,
            primary_address,
            fast_detect: self.fast_detect,
        }
    }
}

// ===== the file as written =====

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    instance: Vec<Spanned<RawInstance>>,
    roles: Option<Spanned<RawRoles>>,
    #[serde(default)]
    hooks: RawHooks,
    notify: Option<RawNotify>,
    fencing: Option<RawFencing>,
    peer: Option<RawPeer>,
    metrics: Option<RawMetrics>,
    ap_recovery: Option<RawApRecovery>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApRecovery {
    instance: Option<Spanned<String>>,
    sync_key_file: Spanned<String>,
    sync_peer: Option<Spanned<String>>,
    sync_port: Option<Spanned<i64>>,
    ike_hook: Option<Spanned<Vec<String>>>,
    ike_hook_timeout: Option<Spanned<String>>,
    ike_daemon_config: Option<Spanned<Vec<String>>>,
    mqtt_kick: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFencing {
    command: Spanned<Vec<String>>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeartbeat {
    interface: Spanned<String>,
    peer: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    address: Spanned<String>,
    ssh_user: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoles {
    instance: Spanned<String>,
    docker_socket: Option<String>,
    master: Spanned<RawSelector>,
    backup: Spanned<RawSelector>,
    stop_timeout: Option<Spanned<String>>,
    demote_delay: Option<Spanned<String>>,
    start_timeout: Option<Spanned<String>>,
    #[serde(default)]
    master_process: Vec<Spanned<RawProcess>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProcess {
    run: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelector {
    compose_project: Option<String>,
    labels: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHooks {
    #[serde(default)]
    before_promote: Vec<Spanned<RawHook>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHook {
    remove: Option<String>,
    run: Option<Vec<String>>,
    timeout: Option<Spanned<String>>,
    blocking: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    script: Spanned<String>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    control_socket: Option<Spanned<String>>,
    state_dir: Option<Spanned<String>>,
    restart_hold: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstance {
    name: Spanned<String>,
    interface: Spanned<String>,
    vrid: Spanned<i64>,
    priority: Spanned<i64>,
    version: Option<Spanned<i64>>,
    advert_interval: Option<Spanned<String>>,
    auth_pass: Option<Spanned<String>>,
    virtual_ips: Spanned<Vec<Spanned<String>>>,
    preempt: Option<bool>,
    #[serde(default)]
    unicast_peers: Vec<Spanned<String>>,
    #[serde(default)]
    peers: Vec<Spanned<String>>,
    fast_detect: Option<Spanned<RawFastDetect>>,
    garp_master_repeat: Option<Spanned<i64>>,
    garp_master_delay: Option<Spanned<String>>,
    #[serde(default)]
    heartbeat: Vec<Spanned<RawHeartbeat>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFastDetect {
    interval: Spanned<String>,
    multiplier: Spanned<i64>,
}

// ===== loading and validating =====

/// Reads and validates `path`. A file anyone may write is refused: it names
/// programs the daemon runs as root.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file_error = |message: String| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        key: "file".to_string(),
        message,
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| file_error(format!("cannot read it: {e}")))?;
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .map_err(|e| file_error(format!("cannot stat it: {e}")))?
        .permissions()
        .mode();
    if mode & 0o002 != 0 {
        return Err(file_error(format!(
            "is world-writable (mode {:o}): anyone could make the daemon run their program as root; chmod o-w {}",
            mode & 0o7777,
            path.display()
        )));
    }
    parse(&text, path)
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
    for raw in raw.instance {
        let span = raw.span();
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
        instances.push(instance);
    }
    let roles = match raw.roles {
        None => None,
        Some(roles) => Some(cx.roles(roles.into_inner(), &instances)?),
    };
    let mut before_promote = Vec::new();
    for hook in raw.hooks.before_promote {
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
            let timeout =
                cx.duration_or(&notify.timeout, "notify.timeout", Duration::from_secs(30))?;
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
            let timeout =
                cx.duration_or(&fencing.timeout, "fencing.timeout", Duration::from_secs(10))?;
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
    Ok(Config {
        ap_recovery,
        daemon: DaemonConfig {
            control_socket,
            state_dir,
            restart_hold,
        },
        instances,
        roles,
        before_promote,
        notify,
        fencing,
        peer,
        metrics,
        warnings,
    })
}

struct Context<'a> {
    text: &'a str,
    file: &'a Path,
}

impl Context<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn error(&self, span: std::ops::Range<usize>, key: &str, message: &str) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: self.line_of(span.start),
            key: key.to_string(),
            message: message.to_string(),
        }
    }

    /// toml's own errors carry a span; the key is whatever stands before
    /// `=` on that line (or the bare key for unknown fields).
    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span().unwrap_or(0..0);
        let line = self.line_of(span.start);
        let text = self
            .text
            .lines()
            .nth(line.saturating_sub(1))
            .unwrap_or_default();
        let key = text
            .split('=')
            .next()
            .unwrap_or_default()
            .trim()
            .trim_matches(['[', ']'])
            .to_string();
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            key: if key.is_empty() {
                "(syntax)".to_string()
            } else {
                key
            },
            message: e.message().trim().to_string(),
        }
    }

    fn instance(
        &self,
        raw: RawInstance,
        warnings: &mut Vec<ConfigWarning>,
    ) -> Result<InstanceConfig, ConfigError> {
        let name = raw.name.get_ref().trim().to_string();
        if name.is_empty() {
            return Err(self.error(raw.name.span(), "name", "must not be empty"));
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
                    Ok(address)
                })
                .collect()
        };
        let unicast_peers = addresses(&raw.unicast_peers, "unicast_peers")?;
        let mut allowed_peers = addresses(&raw.peers, "peers")?;
        if allowed_peers.is_empty() {
            allowed_peers = unicast_peers.clone();
        }
        let fast_detect = match &raw.fast_detect {
            None => None,
            Some(fast) => {
                let interval = self.duration(&fast.get_ref().interval, "fast_detect.interval")?;
                if interval < Duration::from_micros(100) || interval >= advert_interval {
                    return Err(self.error(fast.get_ref().interval.span(), "fast_detect.interval", &format!("must be at least 100us and shorter than advert_interval ({advert_interval:?})")));
                }
                let multiplier =
                    self.integer(&fast.get_ref().multiplier, "fast_detect.multiplier", 2, 255)?
                        as u32;
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
        })
    }

    fn roles(
        &self,
        raw: RawRoles,
        instances: &[InstanceConfig],
    ) -> Result<RolesConfig, ConfigError> {
        let instance = raw.instance.get_ref().clone();
        if !instances.iter().any(|i| i.name == instance) {
            let names: Vec<&str> = instances.iter().map(|i| i.name.as_str()).collect();
            return Err(self.error(
                raw.instance.span(),
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
            stop_timeout: self.duration_or(
                &raw.stop_timeout,
                "roles.stop_timeout",
                Duration::from_secs(5),
            )?,
            demote_delay: self.duration_or(
                &raw.demote_delay,
                "roles.demote_delay",
                Duration::from_secs(10),
            )?,
            start_timeout: self.duration_or(
                &raw.start_timeout,
                "roles.start_timeout",
                Duration::from_secs(60),
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

    fn hook(&self, raw: Spanned<RawHook>) -> Result<Hook, ConfigError> {
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
        let timeout = self.duration_or(
            &raw.timeout,
            "hooks.before_promote.timeout",
            Duration::from_secs(30),
        )?;
        Ok(Hook {
            action,
            timeout,
            blocking: raw.blocking.unwrap_or(true),
        })
    }

    fn ap_recovery(
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
        let ike_hook_timeout = self.duration_or(
            &raw.ike_hook_timeout,
            "ap_recovery.ike_hook_timeout",
            Duration::from_secs(10),
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
        Ok(ApRecoveryConfig {
            instance,
            sync_key_file: PathBuf::from(key),
            sync_peer,
            sync_port,
            ike_hook,
            ike_hook_timeout,
            ike_daemon_config,
            mqtt_kick: raw.mqtt_kick.unwrap_or(true),
        })
    }

    fn integer(
        &self,
        value: &Spanned<i64>,
        key: &str,
        min: i64,
        max: i64,
    ) -> Result<i64, ConfigError> {
        let n = *value.get_ref();
        if !(min..=max).contains(&n) {
            return Err(self.error(
                value.span(),
                key,
                &format!("{n} is out of range; allowed {min} to {max}"),
            ));
        }
        Ok(n)
    }

    fn interface_name(&self, value: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
        let name = value.get_ref();
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
            return Err(self.error(
                value.span(),
                key,
                "must be an interface name (1 to 15 characters, no `/` or spaces)",
            ));
        }
        Ok(name.clone())
    }

    /// An optional duration key: `default` when absent.
    fn duration_or(
        &self,
        value: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            Some(text) => self.duration(text, key),
            None => Ok(default),
        }
    }

    fn duration(&self, value: &Spanned<String>, key: &str) -> Result<Duration, ConfigError> {
        humantime::parse_duration(value.get_ref()).map_err(|e| {
            self.error(
                value.span(),
                key,
                &format!(
                    "`{}` is not a duration ({e}); write it like \"10ms\" or \"1s\"",
                    value.get_ref()
                ),
            )
        })
    }

    fn virtual_ip(&self, entry: &Spanned<String>) -> Result<VirtualIp, ConfigError> {
        let text = entry.get_ref();
        let bad = |what: &str| {
            self.error(
                entry.span(),
                "virtual_ips",
                &format!("`{text}`: {what}; write it like \"10.10.10.3/24\""),
            )
        };
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.as_str(), None),
        };
        let address: IpAddr = address.parse().map_err(|_| bad("not an IP address"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| bad("bad prefix length"))?,
        };
        Ok(VirtualIp {
            address,
            prefix_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[daemon]
control_socket = "/run/wimark-ha/test.sock"

[[instance]]
name = "WIM1"
interface = "eth1"
vrid = 67
priority = 200
version = 3
advert_interval = "10ms"
virtual_ips = ["10.10.10.3/24"]
preempt = true
unicast_peers = []
fast_detect = { interval = "1ms", multiplier = 3 }
"#;

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("/etc/wimark-ha/wimark-ha.toml"))
    }

    #[test]
    fn the_documented_example_is_accepted() {
        let config = parse_str(GOOD).expect("valid");
        assert_eq!(
            config.daemon.control_socket,
            PathBuf::from("/run/wimark-ha/test.sock")
        );
        let instance = &config.instances[0];
        assert_eq!(
            (instance.vrid, instance.priority, instance.version),
            (67, 200, Version::V3)
        );
        assert_eq!(instance.advert_interval, Duration::from_millis(10));
        assert_eq!(
            instance.virtual_ips,
            vec![VirtualIp {
                address: "10.10.10.3".parse().expect("ip"),
                prefix_len: 24
            }]
        );
        assert_eq!(
            instance.fast_detect,
            Some(FastDetect {
                interval: Duration::from_millis(1),
                multiplier: 3
            })
        );
        assert_eq!(
            instance.garp,
            Garp {
                repeat: 5,
                delay: Duration::from_secs(5)
            }
        );
    }

    #[test]
    fn the_vendors_v2_instance_is_accepted_with_a_warning_for_a_long_password() {
        let text = "[[instance]]\nname = \"WIM1\"\ninterface = \"eth1\"\nvrid = 67\npriority = 200\nversion = 2\nadvert_interval = \"1s\"\nauth_pass = \"wimark123\"\nvirtual_ips = [\"10.10.10.3/24\"]\n";
        let config = parse_str(text).expect("valid");
        assert_eq!(config.instances[0].auth, Auth::password("wimark12"));
        assert_eq!(config.warnings.len(), 1);
        assert_eq!(config.warnings[0].line, 8);
    }

    fn error_for(replace: &str, with: &str) -> ConfigError {
        let text = GOOD.replace(replace, with);
        assert_ne!(text, GOOD, "test must change the config");
        parse_str(&text).expect_err("must be refused")
    }

    #[test]
    fn each_bad_value_names_file_line_key_and_what_is_allowed() {
        let cases = [
            (
                "priority = 200",
                "priority = 300",
                9,
                "priority",
                "allowed 1 to 255",
            ),
            ("vrid = 67", "vrid = 0", 8, "vrid", "allowed 1 to 255"),
            (
                "version = 3",
                "version = 4",
                10,
                "version",
                "2 (RFC 3768) or 3",
            ),
            (
                "advert_interval = \"10ms\"",
                "advert_interval = \"15ms\"",
                11,
                "advert_interval",
                "steps of 10ms",
            ),
            (
                "advert_interval = \"10ms\"",
                "advert_interval = \"soon\"",
                11,
                "advert_interval",
                "not a duration",
            ),
            (
                "\"10.10.10.3/24\"",
                "\"10.10.10.300/24\"",
                12,
                "virtual_ips",
                "not an IP address",
            ),
            (
                "\"10.10.10.3/24\"",
                "\"10.10.10.3/33\"",
                12,
                "virtual_ips",
                "bad prefix length",
            ),
            (
                "\"10.10.10.3/24\"",
                "\"10.10.10.3/24\", \"fd00::3/64\"",
                12,
                "virtual_ips",
                "mixes IPv4 and IPv6",
            ),
            (
                "virtual_ips = [\"10.10.10.3/24\"]",
                "virtual_ips = []",
                12,
                "virtual_ips",
                "at least one",
            ),
            (
                "unicast_peers = []",
                "unicast_peers = [\"peer-b\"]",
                14,
                "unicast_peers",
                "not an IP address",
            ),
            (
                "interval = \"1ms\"",
                "interval = \"20ms\"",
                15,
                "fast_detect.interval",
                "shorter than advert_interval",
            ),
            (
                "multiplier = 3",
                "multiplier = 1",
                15,
                "fast_detect.multiplier",
                "allowed 2 to 255",
            ),
            (
                "preempt = true",
                "preempt = true\nauth_pass = \"x\"",
                14,
                "auth_pass",
                "VRRPv3 has no authentication",
            ),
            (
                "preempt = true",
                "preemt = true",
                13,
                "preemt",
                "unknown field",
            ),
            (
                "priority = 200",
                "priority = \"high\"",
                9,
                "priority",
                "invalid type",
            ),
            (
                "interface = \"eth1\"",
                "interface = \"a-very-long-interface\"",
                7,
                "interface",
                "1 to 15 characters",
            ),
        ];
        for (from, to, line, key, allowed) in cases {
            let error = error_for(from, to);
            assert_eq!(
                (error.line, error.key.as_str()),
                (line, key),
                "{to}: {error}"
            );
            assert!(error.message.contains(allowed), "{to}: {error}");
            assert!(
                error
                    .to_string()
                    .starts_with("/etc/wimark-ha/wimark-ha.toml:"),
                "{error}"
            );
        }
    }

    #[test]
    fn v2_specific_rules() {
        let v2 = GOOD
            .replace("version = 3", "version = 2")
            .replace("fast_detect = { interval = \"1ms\", multiplier = 3 }\n", "");
        let error = parse_str(&v2).expect_err("10ms is not a v2 interval");
        assert_eq!(error.key, "advert_interval");
        assert!(error.message.contains("whole seconds"), "{error}");
        let v2_v6 = v2
            .replace("\"10ms\"", "\"1s\"")
            .replace("10.10.10.3/24", "fd00::3/64");
        let error = parse_str(&v2_v6).expect_err("v2 is IPv4 only");
        assert!(error.message.contains("IPv4 only"), "{error}");
    }

    #[test]
    fn duplicates_and_missing_instances_are_refused() {
        let twice = format!(
            "{GOOD}\n{}",
            &GOOD[GOOD.find("[[instance]]").expect("instance")..]
        );
        let error = parse_str(&twice).expect_err("duplicate name");
        assert_eq!(error.key, "name");
        assert_eq!(error.line, 17);
        let renamed = twice.replacen("name = \"WIM1\"", "name = \"WIM2\"", 1);
        assert_eq!(parse_str(&renamed).expect_err("duplicate vrid").key, "vrid");
        assert_eq!(
            parse_str("[daemon]\n").expect_err("no instance").key,
            "instance"
        );
        assert_eq!(parse_str("[[instance]\nname=").expect_err("syntax").line, 1);
    }

    const HEARTBEAT: &str =
        "peers = [\"10.10.10.2\"]\n[[instance.heartbeat]]\ninterface = \"eth0\"\npeer = \"192.168.1.12\"\n";

    #[test]
    fn heartbeat_links_are_read_and_checked() {
        let config = parse_str(&format!("{GOOD}{HEARTBEAT}")).expect("valid");
        assert_eq!(
            config.instances[0].heartbeats,
            vec![HeartbeatLink {
                interface: "eth0".to_string(),
                peer: "192.168.1.12".parse().expect("ip"),
            }]
        );
        // (text, line, key, message)
        let cases = [
            (
                HEARTBEAT.replace("peers = [\"10.10.10.2\"]\n", ""),
                16,
                "heartbeat",
                "set `peers`",
            ),
            (
                HEARTBEAT.replace("\"eth0\"", "\"eth1\""),
                18,
                "heartbeat.interface",
                "already one of",
            ),
            (
                HEARTBEAT.replace("192.168.1.12", "fd00::2"),
                19,
                "heartbeat.peer",
                "family",
            ),
            (
                HEARTBEAT.replace("\"eth0\"", "\"eth0/x\""),
                18,
                "heartbeat.interface",
                "interface name",
            ),
        ];
        for (heartbeat, line, key, message) in cases {
            let error = parse_str(&format!("{GOOD}{heartbeat}")).expect_err("refused");
            assert_eq!((error.line, error.key.as_str()), (line, key), "{error}");
            assert!(error.message.contains(message), "{error}");
        }
        // Another instance with the same VRID on the heartbeat link.
        let other = format!(
            "{GOOD}{HEARTBEAT}\n{}",
            GOOD[GOOD.find("[[instance]]").expect("instance")..]
                .replace("WIM1", "WIM2")
                .replace("\"eth1\"", "\"eth0\"")
        );
        let error = parse_str(&other).expect_err("VRID twice on eth0");
        assert_eq!(error.key, "vrid");
        assert!(error.message.contains("heartbeat link"), "{error}");
    }

    #[test]
    fn restart_hold_is_bounded_and_needs_vrrp_v3() {
        let with = |hold: &str| {
            GOOD.replace(
                "[daemon]\n",
                &format!("[daemon]\nrestart_hold = \"{hold}\"\n"),
            )
        };
        let config = parse_str(&with("5s")).expect("valid");
        assert_eq!(config.daemon.restart_hold, Some(Duration::from_secs(5)));
        for bad in ["10ms", "3m", "soon"] {
            let error = parse_str(&with(bad)).expect_err("refused");
            assert_eq!(
                (error.line, error.key.as_str()),
                (3, "restart_hold"),
                "{error}"
            );
        }
        let v2 = with("5s")
            .replace("version = 3", "version = 2")
            .replace("\"10ms\"", "\"1s\"")
            .replace("fast_detect = { interval = \"1ms\", multiplier = 3 }\n", "");
        let error = parse_str(&v2).expect_err("v2");
        assert!(error.message.contains("needs VRRPv3"), "{error}");
    }

    #[test]
    fn fencing_needs_a_command_and_roles() {
        let roles = "[roles]\ninstance = \"WIM1\"\nmaster = { compose_project = \"m\" }\nbackup = { compose_project = \"b\" }\n";
        let fencing =
            "[fencing]\ncommand = [\"ssh\", \"root@10.10.10.2\", \"true\"]\ntimeout = \"3s\"\n";
        let config = parse_str(&format!("{GOOD}{roles}{fencing}")).expect("valid");
        assert_eq!(
            config.fencing,
            Some(FencingConfig {
                command: vec!["ssh".into(), "root@10.10.10.2".into(), "true".into()],
                timeout: Duration::from_secs(3),
            })
        );
        let error = parse_str(&format!("{GOOD}{fencing}")).expect_err("no roles");
        assert_eq!(error.key, "fencing");
        assert!(error.message.contains("[roles]"), "{error}");
        let error = parse_str(&format!("{GOOD}{roles}[fencing]\ncommand = []\n"))
            .expect_err("empty command");
        assert_eq!(error.key, "fencing.command");
        let error = parse_str(&format!("{GOOD}{roles}{}", fencing.replace("3s", "soon")))
            .expect_err("bad timeout");
        assert_eq!(error.key, "fencing.timeout");
    }
}

/// The operator's guide documents every key the parser accepts: each
/// section is fed an unknown key, and serde's "expected one of …" list is
/// checked against the guide's configuration reference.
#[cfg(test)]
mod reference {
    use super::*;

    const INSTANCE: &str =
        "[[instance]]\nname = \"WIM1\"\ninterface = \"eth1\"\nvrid = 67\npriority = 200\nvirtual_ips = [\"10.0.0.3/24\"]\n";
    const ROLES: &str = "[roles]\ninstance = \"WIM1\"\nmaster = { compose_project = \"m\" }\nbackup = { compose_project = \"b\" }\n";

    fn accepted_keys(text: &str) -> Vec<String> {
        let error = parse(text, Path::new("t.toml")).expect_err("an unknown key is refused");
        let expected = error
            .message
            .split("expected")
            .nth(1)
            .unwrap_or_else(|| panic!("no list of expected keys in `{}`", error.message));
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_key_is_in_the_operators_guide() {
        let guide = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operator-guide.md"),
        )
        .expect("docs/operator-guide.md");
        let reference = guide
            .split("## Configuration reference")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("a Configuration reference section");
        let words: HashSet<&str> = reference
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .collect();
        let sections = [
            format!("zz_unknown = 1\n{INSTANCE}"),
            format!("[daemon]\nzz_unknown = 1\n{INSTANCE}"),
            format!("{INSTANCE}zz_unknown = 1\n"),
            format!("{INSTANCE}fast_detect = {{ interval = \"1ms\", multiplier = 3, zz_unknown = 1 }}\n"),
            format!("{INSTANCE}{ROLES}zz_unknown = 1\n"),
            format!("{INSTANCE}{}", ROLES.replace("\"m\" }", "\"m\", zz_unknown = 1 }")),
            format!("{INSTANCE}{ROLES}[[roles.master_process]]\nrun = [\"x\"]\nzz_unknown = 1\n"),
            format!("{INSTANCE}[hooks]\nzz_unknown = 1\n"),
            format!("{INSTANCE}[[hooks.before_promote]]\nremove = \"/x\"\nzz_unknown = 1\n"),
            format!("{INSTANCE}[notify]\nscript = \"/x\"\nzz_unknown = 1\n"),
            format!("{INSTANCE}[peer]\naddress = \"10.0.0.2\"\nzz_unknown = 1\n"),
            format!("{INSTANCE}[metrics]\nlisten = \"127.0.0.1:9650\"\nzz_unknown = 1\n"),
            format!("{INSTANCE}peers = [\"10.0.0.2\"]\n[[instance.heartbeat]]\ninterface = \"eth0\"\npeer = \"10.1.0.2\"\nzz_unknown = 1\n"),
            format!("{INSTANCE}{ROLES}[fencing]\ncommand = [\"true\"]\nzz_unknown = 1\n"),
        ];
        let mut missing = Vec::new();
        for text in &sections {
            let keys = accepted_keys(text);
            assert!(!keys.is_empty(), "{text}");
            for key in keys {
                if !words.contains(key.as_str()) {
                    missing.push(key);
                }
            }
        }
        assert!(
            missing.is_empty(),
            "keys missing from the guide's configuration reference: {missing:?}"
        );
    }

    #[test]
    fn the_readmes_example_config_is_valid() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
                .expect("README.md");
        let example: Vec<&str> = readme
            .split("```toml\n")
            .skip(1)
            .filter_map(|block| block.split("```").next())
            .collect();
        assert!(
            example.len() >= 2,
            "the README shows its config in ```toml blocks"
        );
        let config = parse(&example.join("\n"), Path::new("README.md"))
            .unwrap_or_else(|e| panic!("the README's example config: {e}"));
        assert!(config.roles.is_some() && config.fencing.is_some());
        assert_eq!(config.instances[0].heartbeats.len(), 1);
    }
}
