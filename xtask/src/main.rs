//! `cargo xtask`: the project's task runner.
//!
//! Every command first checks its prerequisites ([`prereqs`]) and, on a Debian
//! machine as root, installs what is missing; elsewhere it says exactly what
//! to install. Owns: how things are built and run. Must not: contain product
//! logic (that is in `wimark-ha`) or test logic (that is in `tests`).
mod build;
mod prereqs;
mod run;
mod shell;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, test, demo and benchmark wimark-ha"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the XDP kernel object, then target/release/wimark-ha with it embedded.
    Build,
    /// Build, then run every test: unit tests, BPF_PROG_TEST_RUN tests of the
    /// kernel object, and netns integration tests (needs root).
    Test {
        /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Build, then run the two-server lab in throwaway network namespaces:
    /// a failover and its timeline, containers included (needs root).
    Lab,
    /// Benchmarks that print figures measured side by side (needs root).
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
    /// Only check (and, as root on Debian, install) the prerequisites.
    Prereqs,
    /// Long runs: `soak fuzz` fuzzes the packet decoder and the config
    /// parser for longer than the test suite does.
    Soak {
        #[command(subcommand)]
        which: Soak,
    },
    /// Build, then the Debian package (binary with the XDP object, systemd
    /// unit, default config, docs) into target/debian/.
    Deb,
}

#[derive(Debug, Subcommand)]
enum Soak {
    /// Each `cargo fuzz` target for `--seconds` (default 10 minutes).
    Fuzz {
        #[arg(long, default_value_t = 600)]
        seconds: u64,
    },
    /// wimark-ha (1 ms x 3 and x 10) and keepalived (10 ms) pairs left
    /// running idle and with every core saturated by stress-ng, `--seconds`
    /// each: false takeovers, RSS and CPU (needs root). `--only ROW`
    /// (repeatable) runs some rows: x3-idle, x3-saturated, x10-saturated,
    /// x20-saturated, keepalived-idle, keepalived-saturated.
    Cpu {
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        #[arg(long)]
        only: Vec<String>,
    },
}

/// Seconds per fuzz target in `cargo xtask test`.
const FUZZ_SECONDS_IN_TEST: u64 = 20;

#[derive(Debug, Subcommand)]
enum Bench {
    /// Per-packet cost of the XDP program for each packet class
    /// (BPF_PROG_TEST_RUN), and a flood counted by XDP and by AF_PACKET.
    Xdp {
        /// Arguments for the benchmark binary (see `--help` after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Failover timelines (capture on the lab bridge, AP probe stream) of
    /// wimark-ha beside keepalived at VRRPv3 10 ms and the vendor's v2 1 s,
    /// then the rows of `bench aps` (real AP clients; `-- --no-aps` skips).
    Failover {
        /// Arguments for the benchmark binary (see `--help` after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Real AP clients (strongSwan charon initiators) after a node loss:
    /// when each AP's tunnel works again, with and without AP recovery.
    Aps {
        /// Arguments for the benchmark binary (see `--help` after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// A VIP removed from the master by someone else (`ip addr del`), to
    /// the VIP back: wimark-ha beside keepalived.
    Vip {
        /// Arguments for the benchmark binary (see `--help` after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// A 5-container stack switched by wimark-ha beside the seed's
    /// `docker-compose down && up -d`, against a real dockerd.
    Roles {
        /// Arguments for the benchmark binary (see `--help` after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// A tracked check failing on the master, to the peer's first
    /// gratuitous ARP: wimark-ha's trackers beside keepalived's
    /// track_script.
    Tracking {
        /// Arguments for the benchmark binary (see `--help` after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = build::workspace_root();
    match cli.command {
        Command::Prereqs => prereqs::ensure(),
        Command::Deb => {
            prereqs::ensure()?;
            let built = build::all(&root)?;
            let deb = build::deb(&root, &built)?;
            println!("{}", deb.display());
            Ok(())
        }
        Command::Build => {
            prereqs::ensure()?;
            build::all(&root).map(|_| ())
        }
        Command::Test { cargo_args } => {
            prereqs::ensure()?;
            prereqs::require_root("the test suite (network namespaces, BPF)")?;
            prereqs::ensure_dockerd()?;
            let built = build::all(&root)?;
            let deb = build::deb(&root, &built)?;
            run::tests(&root, &built, &deb, &cargo_args)?;
            // The whole suite also fuzzes for a bounded time; a filtered run
            // (a test name given) does not.
            if cargo_args.is_empty() {
                run::fuzz(&root, FUZZ_SECONDS_IN_TEST)
            } else {
                println!("fuzz: skipped (a test filter was given)");
                Ok(())
            }
        }
        Command::Soak { which } => match which {
            Soak::Fuzz { seconds } => {
                prereqs::ensure()?;
                run::fuzz(&root, seconds)
            }
            Soak::Cpu { seconds, only } => {
                prereqs::ensure()?;
                prereqs::require_root("the soak (network namespaces, XDP)")?;
                let built = build::all(&root)?;
                let mut args = vec![
                    "soak".to_string(),
                    "--seconds".to_string(),
                    seconds.to_string(),
                ];
                for row in only {
                    args.extend(["--only".to_string(), row]);
                }
                run::tool(&root, &built, "wimark-ha-bench", &args)
            }
        },
        Command::Lab => {
            prereqs::ensure()?;
            prereqs::require_root("the lab (network namespaces, XDP)")?;
            prereqs::ensure_dockerd()?;
            let built = build::all(&root)?;
            run::tool(&root, &built, "wimark-ha-lab", &[])
        }
        Command::Bench { which } => {
            prereqs::ensure()?;
            prereqs::require_root("the benchmarks (BPF, network namespaces)")?;
            prereqs::ensure_dockerd()?;
            let built = build::all(&root)?;
            let (name, args) = match which {
                Bench::Xdp { args } => ("xdp", args),
                Bench::Failover { args } => ("failover", args),
                Bench::Roles { args } => ("roles", args),
                Bench::Aps { args } => ("aps", args),
                Bench::Tracking { args } => ("tracking", args),
                Bench::Vip { args } => ("vip", args),
            };
            let mut all = vec![name.to_string()];
            all.extend(args);
            run::tool(&root, &built, "wimark-ha-bench", &all)
        }
    }
}
