//! The command line: one `clap` tree, one module per subcommand.
//!
//! Owns: argument parsing, logging setup, and turning typed errors into the
//! one-line messages users see. Must not: hold protocol or monitor logic.
mod check_config;
mod daemon;
mod doctor;
mod generate_docs;
mod history;
mod ike_initiate;
mod import_keepalived;
pub mod journal;
mod stats;

use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// wimark-ha: Active–Standby failover for the Wimark One Wi-Fi controller.
///
/// An XDP program on the peer interface sees every VRRP advert and every AP
/// tunnel packet (IKE 500/udp, NAT-T 4500/udp, ESP, MQTT 1883/tcp, 8883/tcp)
/// at line rate; the daemon detects a lost peer within milliseconds, takes the
/// virtual IP and switches the container roles.
#[derive(Debug, Parser)]
#[command(name = "wimark-ha", version, about, long_about)]
pub struct Cli {
    /// Log level for the daemon; `debug` also turns on the XDP program's own
    /// diagnostics (why each rejected VRRP packet was rejected).
    #[arg(long, global = true, value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn as_filter(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }

    /// Kernel-side logging is on only for debug and trace: it costs a ring
    /// buffer write per rejected packet.
    pub fn kernel_log(self) -> Option<log::Level> {
        match self {
            LogLevel::Debug => Some(log::Level::Debug),
            LogLevel::Trace => Some(log::Level::Trace),
            _ => None,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach the XDP monitor to an interface and show VRRP and AP traffic.
    ///
    /// Prints a table of rates and totals every --interval, VRRP peers with the
    /// age of their last advert, and peer changes as they happen. Detaches on
    /// Ctrl-C, SIGTERM, or when --duration ends. With --json, prints one JSON
    /// object at the end instead.
    Stats(stats::StatsArgs),
    /// Validate a config file without running anything. A bad file is
    /// reported as `file:line: key: what is wrong; what is allowed`.
    CheckConfig(check_config::CheckConfigArgs),
    /// Run the daemon: VRRP on the configured interfaces, VIPs, status.
    /// SIGTERM resigns mastership (priority 0) and removes the VIPs.
    Run(daemon::RunArgs),
    /// Show each instance's state, peer, last advert age and transition
    /// history with timings.
    Status(daemon::StatusArgs),
    /// Hand mastership to the peer at once (a priority-0 advert).
    Switchover(daemon::SwitchoverArgs),
    /// Restart the daemon in place (e.g. after an upgrade) keeping
    /// mastership: needs `[daemon] restart_hold`. The config is checked
    /// first; each master tells the peer to wait up to restart_hold, keeps
    /// its VIPs and containers, and the binary on disk is executed again.
    /// Waits until the new process answers.
    Restart(daemon::RestartArgs),
    /// Check this server against the vendor's preparation list.
    ///
    /// Kernel and BPF support, net.ipv4.ip_forward and ip_nonlocal_bind,
    /// the iptables FORWARD policy, the ports the APs and the peer need
    /// (500/udp, 4500/udp, 1883/tcp, 80/tcp, 443/tcp, 22/tcp), the peer
    /// interface, Docker and the role stacks, the peer on the peer link,
    /// password-less ssh to it (when [peer] ssh_user is set), a keepalived
    /// still running on one of our VRIDs, each remove hook's path as the
    /// service's capabilities reach it, and the AP recovery (the IKE hook,
    /// MOBIKE in the strongSwan adapter's connection). One line per check:
    /// OK, WARN or FAIL with the fix. Exits 1 if anything FAILed. Changes
    /// nothing.
    Doctor(doctor::DoctorArgs),
    /// Show the failover journal: every transition with its timings, every
    /// container switch, and how soon AP traffic reached the new master.
    /// Read from the state directory; works with the daemon stopped.
    History(history::HistoryArgs),
    /// Print the wimark-ha config equivalent to a keepalived.conf.
    ///
    /// vrrp_instance blocks become [[instance]] sections (interface, VRID,
    /// priority, advert_int, version, authentication, virtual_ipaddress,
    /// nopreempt, unicast_peer, garp settings) and `notify` a [notify]
    /// script. With --env-dir, the vendor's master/.env and backup/.env fill
    /// in the peer and a [roles] section replacing master-backup.sh.
    /// Whatever cannot be carried over is listed as comments in the output.
    /// The result is validated as `check-config` would before it is printed.
    ImportKeepalived(import_keepalived::ImportKeepalivedArgs),
    /// Bring the APs' IPsec back after a takeover (strongSwan adapter).
    ///
    /// Reads the AP list a recovery hook gets on stdin (JSON, see the
    /// operator's guide) and initiates an IKE SA from this server's charon
    /// to each AP over vici, so the AP drops its stale SA at once
    /// (INITIAL_CONTACT). Prints one JSON line per AP; exits 1 if any AP
    /// failed, 2 if the config or the input is unusable.
    IkeInitiate(ike_initiate::IkeInitiateArgs),

    /// Write the man page and shell completions (for packaging).
    #[command(hide = true)]
    GenerateDocs(generate_docs::GenerateDocsArgs),
}

impl Cli {
    /// Logs go to stderr so `--json` output on stdout stays clean; plain text
    /// unless stderr is a terminal; with syslog priorities and without our
    /// timestamps when stderr is the journal ([`journal`]).
    /// `RUST_LOG` overrides --log-level. The level applies to our own code and
    /// to the XDP program's messages (target `wimark_ha_ebpf`); libraries stay
    /// at `warn` so `debug` shows our diagnostics, not aya's loader chatter.
    ///
    /// The daemon (`run`) writes through a logging thread: under systemd
    /// stderr is a socket to journald, which a loaded host may leave
    /// unread, and a full socket would block the realtime engine in the
    /// middle of a takeover. Lines past the thread's buffer are dropped,
    /// never waited for. Keep the returned guard until exit: it flushes.
    #[must_use = "dropping the guard stops the daemon's logging thread"]
    pub fn init_logging(&self) -> Option<tracing_appender::non_blocking::WorkerGuard> {
        let level = self.log_level.as_filter();
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!(
                "warn,wimark_ha={level},wimark_ha_ebpf={level}"
            ))
        });
        // Colour only for a person at a terminal: under systemd stderr is
        // journald, where escape codes end up as noise in every line.
        use std::io::IsTerminal as _;
        let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(colour);
        let (writer, guard) = if matches!(self.command, Command::Run(_)) {
            let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
            (BoxMakeWriter::new(writer), Some(guard))
        } else {
            (BoxMakeWriter::new(std::io::stderr), None)
        };
        // In the journal: each line's syslog priority, and journald's
        // timestamp instead of ours.
        if journal::stderr_is_journal() {
            builder
                .event_format(journal::JournalFormat)
                .with_writer(writer)
                .init();
        } else {
            builder.with_writer(writer).init();
        }
        guard
    }

    pub fn run(self) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        match self.command {
            Command::Stats(args) => runtime.block_on(stats::run(args, self.log_level)),
            Command::CheckConfig(args) => runtime.block_on(check_config::run(args)),
            Command::Run(args) => {
                drop(runtime); // the daemon builds its own threads and runtimes
                daemon::run(args, self.log_level)
            }
            Command::Status(args) => daemon::status(args),
            Command::Switchover(args) => daemon::switchover(args),
            Command::Restart(args) => daemon::restart(args),
            Command::ImportKeepalived(args) => import_keepalived::run(args),
            Command::History(args) => history::run(args),
            Command::GenerateDocs(args) => generate_docs::run(args),
            Command::IkeInitiate(args) => match runtime.block_on(ike_initiate::run(args)) {
                Ok(code) => std::process::exit(code),
                Err(e) => {
                    eprintln!("wimark-ha: {e:#}");
                    std::process::exit(2);
                }
            },
            Command::Doctor(args) => {
                if !runtime.block_on(doctor::run(args))? {
                    std::process::exit(1);
                }
                Ok(())
            }
        }
    }
}

/// Parses "5s", "250ms", "1m30s" (humantime) and refuses zero.
pub(crate) fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration =
        humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 5s, 250ms, 1m)"))?;
    if duration.is_zero() {
        return Err("must be greater than zero".to_string());
    }
    Ok(duration)
}
