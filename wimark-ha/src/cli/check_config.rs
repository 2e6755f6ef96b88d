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

pub async fn run(args: CheckConfigArgs) -> anyhow::Result<()> {
    let config = config::load(&args.config)?;
    for warning in &config.warnings {
        eprintln!("{}: warning: {warning}", args.config.display());
    }
    containers_here(&config, &args.config).await?;
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

/// A container tracker must name containers that exist: asked of Docker
/// when it answers (the daemon does not wait for it, so a Docker that does
/// not answer yet is a warning, not an error).
async fn containers_here(config: &config::Config, file: &std::path::Path) -> anyhow::Result<()> {
    use crate::config::{ContainerTarget, TrackKind};
    for instance in &config.instances {
        for tracker in &instance.trackers {
            let TrackKind::Container(track) = &tracker.kind else {
                continue;
            };
            match crate::track::container::count_matching(track).await {
                Err(why) => eprintln!(
                    "{}: warning: line {}: track.container: tracker `{}` not checked: {why}",
                    file.display(),
                    tracker.line,
                    tracker.name
                ),
                Ok(0) => {
                    let (key, what) = match &track.target {
                        ContainerTarget::Name(name) => ("track.container", format!("no container `{name}`")),
                        ContainerTarget::Label(label) => {
                            ("track.container_label", format!("no container labelled {label}"))
                        }
                    };
                    return Err(config::ConfigError {
                        file: file.to_path_buf(),
                        line: tracker.line,
                        key: key.to_string(),
                        message: format!(
                            "{what} on this host's Docker (tracker `{}`); create it first (docker create / docker-compose up --no-start)",
                            tracker.name
                        ),
                    }
                    .into());
                }
                Ok(_) => {}
            }
        }
    }
    Ok(())
}
