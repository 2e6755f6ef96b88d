//! The XDP traffic monitor, userspace side: loads the embedded kernel object,
//! attaches it to the peer interface, reads its counters, peer and AP tables,
//! and streams its peer-change events.
//!
//! Owns: the kernel object's lifetime (attach on create, detach on drop).
//! Must not: decide anything about failover — it reports what the wire shows;
//! the VRRP state machine decides.
mod adverts;
mod ap_clock;
mod attach;
mod events;
mod snapshot;

pub use adverts::{AdvertReader, Heard};
pub use attach::{attached_xdp_program, AttachMode, ExistingProgram};
pub use events::{EventStream, PeerChange};
pub use snapshot::{
    ap_table_capacity, read_aps, read_counters, read_ike_sessions, read_mqtt, read_peers, ApSeen, ApStats, InvalidCounts, PeerStats, Snapshot,
    TrafficTotals, VrrpStats, ACTIVE_AP_WINDOW,
};

use std::io;

use aya::{programs::Xdp, Ebpf, EbpfLoader};
use tokio::io::unix::AsyncFd;
use wimark_ha_common::abi::PROGRAM_NAME;

/// The XDP object built by `cargo xtask build`, embedded at compile time.
static KERNEL_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/wimark-ha-ebpf.o"));

/// Everything that can go wrong loading or attaching the monitor. Each message
/// says what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(
        "this wimark-ha binary was built without its XDP kernel object; build it with `cargo xtask build`"
    )]
    ObjectMissing,
    #[error("interface `{interface}` does not exist (list interfaces with `ip link`)")]
    NoSuchInterface { interface: String },
    #[error(
        "not permitted to load BPF programs ({detail}): run as root, or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON"
    )]
    NotPermitted { detail: String },
    #[error(
        "the kernel cannot run the monitor ({detail}); it needs Linux 5.8 or newer with BPF, XDP and BPF ring buffers enabled"
    )]
    KernelUnsupported { detail: String },
    #[error(
        "interface `{interface}` already has an XDP program attached (id {id}, name `{name}`); detach it (`ip link set dev {interface} xdp off`) or pass --force to replace it"
    )]
    AlreadyAttached {
        interface: String,
        id: u32,
        name: String,
    },
    #[error("could not replace the XDP program on `{interface}` (id {id}): {detail}")]
    ReplaceFailed {
        interface: String,
        id: u32,
        detail: String,
    },
    #[error(
        "the kernel object has no {what} `{name}`; the binary and its XDP object do not match"
    )]
    ObjectMismatch {
        what: &'static str,
        name: &'static str,
    },
    #[error("reading the monitor's `{map}` map failed: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("netlink query on `{interface}` failed: {detail}")]
    Netlink { interface: String, detail: String },
    #[error("attaching XDP to `{interface}` failed: {detail}")]
    Attach { interface: String, detail: String },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The errno behind an aya error, if any: aya wraps syscall failures several
/// layers deep.
pub(crate) fn errno_of(error: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(code) = io.raw_os_error() {
                return Some(code);
            }
        }
        current = e.source();
    }
    None
}

/// The error and its sources on one line (the verifier log can be thousands
/// of lines; only its first is kept).
pub(crate) fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut detail = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    detail.lines().next().unwrap_or_default().to_string()
}

const CAP_PERFMON: u32 = 38;

/// Whether this process has capability `bit` in its effective set.
fn has_effective_capability(bit: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|mask| mask & (1 << bit) != 0)
}

/// Turns a failure of `bpf()` into a [`MonitorError`] that tells the user what to do.
fn classify_load_error(error: &(dyn std::error::Error + 'static)) -> MonitorError {
    // The whole story (with the verifier's log) for `--log-level debug`.
    tracing::debug!("loading the XDP object failed: {error:#?}");
    match errno_of(error) {
        // EACCES from BPF_PROG_LOAD is the verifier refusing the program, not
        // a permission problem; EPERM is missing privileges.
        Some(libc::EPERM) => MonitorError::NotPermitted {
            detail: one_line(error),
        },
        // ...unless CAP_PERFMON is missing: without it the verifier applies
        // the unprivileged rules and refuses the program with EACCES.
        Some(libc::EACCES) if !has_effective_capability(CAP_PERFMON) => {
            MonitorError::NotPermitted {
                detail: format!("{} (CAP_PERFMON is missing)", one_line(error)),
            }
        }
        _ => MonitorError::KernelUnsupported {
            detail: one_line(error),
        },
    }
}

/// Registers a map-backed fd (ring buffer) with tokio for readability.
pub(crate) fn register_readable<T: std::os::fd::AsRawFd>(inner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: the fd is owned by `inner`, which the AsyncFd owns, so it stays
    // open (and is not reused) for as long as it is registered.
    unsafe { AsyncFd::register_with_interest(inner, tokio::io::Interest::READABLE) }
        .map_err(io::Error::from)
}

/// Options for [`Monitor::attach`].
#[derive(Clone, Copy, Debug, Default)]
pub struct MonitorOptions {
    /// Replace an XDP program already attached to the interface.
    pub force: bool,
    /// Kernel-side diagnostics (aya-log). `None` keeps them off: the fast
    /// path then costs one load and one branch per rejected packet.
    pub kernel_log: Option<log::Level>,
    /// How many APs the AP table (and the MQTT and IKE session tables with
    /// it) must hold; `None`: the object's default,
    /// [`AP_TABLE_DEFAULT_APS`](wimark_ha_common::abi::AP_TABLE_DEFAULT_APS).
    pub max_aps: Option<u32>,
}

/// Loads the kernel object and verifies the XDP program without attaching it
/// (tests and benchmarks feed it frames through BPF_PROG_TEST_RUN).
pub fn load(kernel_log: Option<log::Level>) -> Result<Ebpf, MonitorError> {
    if KERNEL_OBJECT.is_empty() {
        return Err(MonitorError::ObjectMissing);
    }
    load_object(KERNEL_OBJECT, kernel_log, None)
}

/// Loads another build of the kernel object the way [`load`] loads the
/// embedded one (the benchmark compares two builds side by side); with
/// `max_aps`, its AP tables sized for that many APs.
pub fn load_object(
    object: &[u8],
    kernel_log: Option<log::Level>,
    max_aps: Option<u32>,
) -> Result<Ebpf, MonitorError> {
    // Not fatal where it fails: since 5.11 BPF memory is charged to the cgroup.
    raise_memlock_limit();
    let level: u8 = match kernel_log {
        None => 0,
        Some(level) => level as u8,
    };
    // Declared before the loader, which holds a reference to it.
    let set_bits;
    let mut loader = EbpfLoader::new();
    loader.override_global(aya_log::LEVEL, &level, true);
    if let Some(aps) = max_aps {
        use wimark_ha_common::abi::{
            ap_table_sets, GLOBAL_AP_SET_BITS, MAP_APS, MAP_IKE_SESSIONS, MAP_MQTT,
        };
        let aps = aps.clamp(1, wimark_ha_common::abi::AP_TABLE_MAX_APS);
        let sets = ap_table_sets(aps);
        set_bits = sets.trailing_zeros();
        loader
            .override_global(GLOBAL_AP_SET_BITS, &set_bits, true)
            .map_max_entries(MAP_APS, sets)
            // A floor for tiny tables: an LRU map far smaller than the
            // CPUs' count evicts entries other CPUs just made.
            .map_max_entries(MAP_MQTT, (4 * aps).max(256))
            .map_max_entries(MAP_IKE_SESSIONS, (2 * aps).max(256));
    }
    let mut ebpf = loader
        .load(object)
        .map_err(|e| classify_load_error(&e))?;
    monitor_program(&mut ebpf)?
        .load()
        .map_err(|e| classify_load_error(&e))?;
    Ok(ebpf)
}

/// The monitor's XDP program in a loaded object.
pub(crate) fn monitor_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, MonitorError> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or(MonitorError::ObjectMismatch {
            what: "program",
            name: PROGRAM_NAME,
        })?
        .try_into()
        .map_err(|_| MonitorError::ObjectMismatch {
            what: "XDP program",
            name: PROGRAM_NAME,
        })
}

fn raise_memlock_limit() {
    use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};
    if let Err(error) = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY) {
        tracing::debug!("setrlimit(MEMLOCK) failed: {error}");
    }
}

/// The monitor attached to one interface. Dropping it detaches the program.
pub struct Monitor {
    ebpf: Ebpf,
    interface: String,
    mode: AttachMode,
    kernel_logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    _ap_clock: ap_clock::ApClock,
}

impl Monitor {
    /// Loads the monitor and attaches it to `interface`: driver mode, falling
    /// back to generic mode where the driver has no native XDP.
    pub async fn attach(interface: &str, options: MonitorOptions) -> Result<Self, MonitorError> {
        let ifindex = attach::interface_index(interface)?;
        if KERNEL_OBJECT.is_empty() {
            return Err(MonitorError::ObjectMissing);
        }
        let mut ebpf = load_object(KERNEL_OBJECT, options.kernel_log, options.max_aps)?;
        let kernel_logger = match options.kernel_log {
            Some(_) => match aya_log::EbpfLogger::init(&mut ebpf) {
                Ok(logger) => Some(logger),
                Err(e) => {
                    tracing::warn!("kernel-side logging unavailable: {e}");
                    None
                }
            },
            None => None,
        };
        let ap_clock = ap_clock::ApClock::start(&mut ebpf)?;
        let mode = attach::attach(&mut ebpf, interface, ifindex, options.force).await?;
        tracing::info!(interface, mode = %mode, "XDP monitor attached");
        Ok(Self {
            ebpf,
            interface: interface.to_string(),
            mode,
            kernel_logger,
            _ap_clock: ap_clock,
        })
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// Counters, peers and APs as of now.
    pub fn snapshot(&self) -> Result<Snapshot, MonitorError> {
        Snapshot::read(&self.ebpf, &self.interface)
    }

    /// The peer-change event stream (can be taken once).
    pub fn take_events(&mut self) -> Result<EventStream, MonitorError> {
        EventStream::new(&mut self.ebpf)
    }

    /// Every valid advert of the watched VRIDs from now on, each VRID with
    /// its peer allow-list (empty: any source). Can be taken once.
    pub fn take_adverts(
        &mut self,
        watch: &[(u8, Vec<std::net::IpAddr>)],
    ) -> Result<AdvertReader, MonitorError> {
        AdvertReader::new(&mut self.ebpf, watch)
    }

    /// The kernel-side log reader, when `--log-level debug` asked for one.
    pub fn take_kernel_logger(
        &mut self,
    ) -> Option<Result<AsyncFd<aya_log::EbpfLogger<&'static dyn log::Log>>, io::Error>> {
        self.kernel_logger.take().map(register_readable)
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        // The links are released with `ebpf`; this only records it.
        tracing::info!(interface = %self.interface, "XDP monitor detached");
    }
}
