//! `wimark-ha check-config`: validate a config without running anything.

use std::path::PathBuf;

use clap::Args;

use crate::config;

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The config file.
    #[arg(long, default_value = "/etc/wimark-ha/wimark-ha.toml")]
    pub config: PathBuf,
}

pub fn run(args: CheckConfigArgs) -> anyhow::Result<()> {
    let config = config::load(&args.config)?;
    for warning in &config.warnings {
        eprintln!("{}: warning: {warning}", args.config.display());
    }
    println!(
        "{}: OK, {} instance(s)",
        args.config.display(),
        config.instances.len()
    );
    for i in &config.instances {
        let vips: Vec<String> = i.virtual_ips.iter().map(|v| v.to_string()).collect();
        let fast = match i.fast_detect {
            Some(f) => format!(", fast detection {:?} {}", f.interval, f.multiplier),
            None => String::new(),
        };
        println!(
            "  {}: {} VRID {} priority {} VRRPv{} every {:?}{}, VIPs {}",
            i.name,
            i.interface,
            i.vrid,
            i.priority,
            i.version.number(),
            i.advert_interval,
            fast,
            vips.join(" ")
        );
        for link in &i.heartbeats {
            println!(
                "    heartbeat link {} (peer {}): the peer is down only when silent on every link",
                link.interface, link.peer
            );
        }
    }
    if let Some(fencing) = &config.fencing {
        println!(
            "  fencing before a promotion after the peer's silence: {} (timeout {:?})",
            fencing.command.join(" "),
            fencing.timeout
        );
    }
    Ok(())
}
