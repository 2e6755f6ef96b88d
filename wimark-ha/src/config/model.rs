//! The validated configuration the rest of the daemon reads: every value
//! checked, every default applied.

use super::*;

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
    /// Instances that move together (`[[sync_group]]`).
    pub sync_groups: Vec<SyncGroupConfig>,
    /// The third vote: a key in etcd that the node running the master
    /// stack holds (`[witness]`).
    pub witness: Option<WitnessConfig>,
    pub warnings: Vec<ConfigWarning>,
}

/// keepalived's `vrrp_sync_group`: one member going BACKUP or FAULT moves
/// all, and they take over only together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroupConfig {
    pub name: String,
    /// Instance names, at least two, each in no other group.
    pub instances: Vec<String>,
}

impl Config {
    /// The sync group `instance` belongs to, if any.
    pub fn sync_group_of(&self, instance: &str) -> Option<&SyncGroupConfig> {
        self.sync_groups
            .iter()
            .find(|g| g.instances.iter().any(|i| i == instance))
    }
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
    /// Stale MQTT connections kicked per second: each client reconnects one
    /// reconnect delay later, so this is the rate at which the new master's
    /// broker is asked to accept them (mosquitto's listen queue holds 100).
    pub mqtt_kick_rate: u32,
    /// The servers' IKE daemon's vici socket: the master lists its IKE_SAs
    /// there and syncs each AP's port and identity, which the IKE hook
    /// needs for APs behind a NAT (their identity is not their address,
    /// and several may share one).
    pub ike_vici: Option<PathBuf>,
    /// How many APs the XDP AP table must hold without evicting one (it is
    /// sized for this at start: ~300 bytes per AP and CPU, the MQTT and IKE
    /// session tables with it).
    pub max_aps: u32,
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
    /// Threads sending the fast advert stream.
    pub advert_senders: AdvertSenders,
}

/// `[daemon] advert_senders`: `"auto"` (the default) runs one per CPU the
/// daemon may use, at most four; a number runs that many, pinned
/// round-robin (1 = the single-thread sender of earlier releases).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AdvertSenders {
    #[default]
    Auto,
    Count(usize),
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
    /// What the priority or FAULT follows (`[[instance.track]]`).
    pub trackers: Vec<TrackConfig>,
}

/// One `[[instance.track]]`, keepalived's `track_*` with its semantics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackConfig {
    /// Unique in the instance; shown in status, metrics and the journal.
    pub name: String,
    pub kind: TrackKind,
    /// keepalived's weight, -254..=254: 0 (the default) puts the instance
    /// in FAULT while the tracker fails; a negative weight is added to the
    /// priority while it fails, a positive one while it is healthy. A file
    /// tracker adds the file's number times the weight.
    pub weight: i32,
    /// The line of the entry in the config file, for later errors.
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackKind {
    /// Another link's state (e.g. the AP-facing one), from kernel link
    /// notifications.
    Interface(String),
    Script(ScriptTrack),
    /// keepalived's `track_file`: the number the file holds.
    File(PathBuf),
    /// A container's (or a labelled set's) run state and health, from the
    /// Docker events API.
    Container(ContainerTrack),
    /// keepalived's `track_process`: how many processes of a name run, from
    /// the kernel's process events.
    Process(ProcessTrack),
}

impl TrackKind {
    /// As keepalived names them in logs: "track script", "track interface".
    pub fn label(&self) -> &'static str {
        match self {
            TrackKind::Interface(_) => "interface",
            TrackKind::Script(_) => "script",
            TrackKind::File(_) => "file",
            TrackKind::Container(_) => "container",
            TrackKind::Process(_) => "process",
        }
    }
}

/// A container tracker: bad is not running, paused, or running but not
/// healthy by its Docker healthcheck; the tracker fails once a bad spell
/// (restarts faster than `grace` joined into one) has lasted `grace`, and
/// heals once the containers were good for `grace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerTrack {
    pub target: ContainerTarget,
    pub grace: Duration,
    /// Judged always (`when = "always"`), not only while this node's master
    /// stack is in force (`when = "master"`, the default: on a backup the
    /// master stack is stopped on purpose).
    pub always: bool,
    /// The Docker socket (`[roles] docker_socket`, else Docker's default).
    pub docker_socket: PathBuf,
}

/// A process tracker: failed once fewer than `quorum` processes called
/// `name` (the kernel's comm, or the program's file name) have run for
/// `grace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessTrack {
    pub name: String,
    pub quorum: u32,
    pub grace: Duration,
}

/// Which containers a container tracker watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerTarget {
    /// One container, by name.
    Name(String),
    /// Every container with this label (`key=value` or `key`).
    Label(String),
}

/// keepalived's `vrrp_script`: run every `interval`, never two at once,
/// killed at `timeout`; exit 0 is a success. `fall` failures in a row make
/// it failed, `rise` successes in a row healthy again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptTrack {
    pub argv: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// Failed until its first success (keepalived's `init_fail`).
    pub init_fail: bool,
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
            sole_peer: self.allowed_peers.len() == 1,
        }
    }

    /// RFC 5798 §5.2.4: priority 255 is the owner of the VIPs, which are
    /// the interface's own addresses: sent from, never added or removed.
    pub fn is_address_owner(&self) -> bool {
        self.priority == 255
    }

    /// The configured VIP (with its prefix) at `address`, if it is one.
    pub fn virtual_ip(&self, address: std::net::IpAddr) -> Option<VirtualIp> {
        self.virtual_ips
            .iter()
            .find(|v| v.address == address)
            .copied()
    }
}

/// `[witness]`: the master stack runs only on the node holding `key` in
/// etcd, under a lease it keeps alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessConfig {
    /// etcd members, `http://host:port` or `https://host:port`.
    pub endpoints: Vec<String>,
    pub key: String,
    /// Whole seconds (etcd's unit); etcd may grant more (its minimum).
    pub lease_ttl: Duration,
    /// How this node names itself in the key's value (default: hostname).
    pub node: String,
    pub credentials: Option<WitnessCredentials>,
    pub tls: Option<WitnessTls>,
    pub on_isolation: OnIsolation,
}

#[derive(Clone, PartialEq, Eq)]
pub struct WitnessCredentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for WitnessCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password, not even in a debug print.
        f.debug_struct("WitnessCredentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessTls {
    pub ca: PathBuf,
    /// A client certificate and its key, when etcd asks for one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// What a master that can neither renew its lease nor hear its peer does
/// besides demoting its containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnIsolation {
    /// Keep the VIP (the fast path is unchanged; only the stack moves).
    KeepVip,
    /// Give the VIP up too.
    ReleaseVip,
}
