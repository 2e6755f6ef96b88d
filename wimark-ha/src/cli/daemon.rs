//! `wimark-ha run`, `status` and `switchover`.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use super::LogLevel;
use crate::control::{self, Request};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The config file.
    #[arg(long, default_value = "/etc/wimark-ha/wimark-ha.toml")]
    pub config: PathBuf,
    /// Where the failover journal lives; overrides `[daemon] state_dir`
    /// (default /var/lib/wimark-ha).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the daemon's status as JSON.
    #[arg(long)]
    pub json: bool,
    /// The daemon's control socket.
    #[arg(long, default_value_os_t = control::default_socket())]
    pub socket: PathBuf,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    /// How long to wait for the new process to answer.
    #[arg(long, default_value = "30s", value_parser = super::parse_positive_duration)]
    pub timeout: std::time::Duration,
    /// The daemon's control socket.
    #[arg(long, default_value_os_t = control::default_socket())]
    pub socket: PathBuf,
}

#[derive(Debug, Args)]
pub struct SwitchoverArgs {
    /// Only this instance (default: every instance this node is master of).
    #[arg(long)]
    pub instance: Option<String>,
    /// End an earlier switchover on this node (the one that handed over):
    /// it may preempt again, and takes mastership back if its priority is
    /// higher. Until then it stays backup whatever its priority or a
    /// transient silence says.
    #[arg(long)]
    pub back: bool,
    /// The daemon's control socket.
    #[arg(long, default_value_os_t = control::default_socket())]
    pub socket: PathBuf,
}

pub fn run(args: RunArgs, log_level: LogLevel) -> anyhow::Result<()> {
    crate::daemon::run(
        &args.config,
        args.state_dir.as_deref(),
        log_level.kernel_log(),
    )
}

pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let response = control::request(&args.socket, &Request::Status)?;
    let Some(status) = response.status.filter(|_| response.ok) else {
        bail!(
            "{}",
            response
                .error
                .unwrap_or_else(|| "the daemon sent no status".to_string())
        );
    };
    if args.json {
        println!("{}", serde_json::to_string(&status)?);
        return Ok(());
    }
    for i in &status.instances {
        let ago = |ms: Option<u64>| ms.map_or("never".to_string(), |ms| format!("{ms} ms ago"));
        // As MASTER the advert that matters is ours.
        let last_advert = if i.state == crate::records::State::Master {
            format!("last advert sent {}", ago(i.last_advert_sent_ms_ago))
        } else {
            format!("last advert {}", ago(i.last_advert_ms_ago))
        };
        // The priority in force, and the configured one when trackers moved it.
        let priority = match i.effective_priority {
            Some(p) if p != i.priority => format!("{p} (configured {})", i.priority),
            _ => i.priority.to_string(),
        };
        println!(
            "{} ({} VRID {}, VRRPv{}): {} priority {priority}, master {}, {last_advert}",
            i.name,
            i.interface,
            i.vrid,
            i.version,
            i.state,
            i.master.map_or("unknown".to_string(), |m| m.to_string()),
        );
        for t in &i.trackers {
            let effect = if t.fault {
                "holds FAULT".to_string()
            } else if t.weight_in_force != 0 {
                format!("weight {:+} in force", t.weight_in_force)
            } else {
                "no effect now".to_string()
            };
            let degraded = t
                .degraded
                .as_ref()
                .map_or(String::new(), |why| format!(" [degraded: {why}; health as last known]"));
            println!(
                "  track {} {} ({}): {}, weight {}, {effect}; {}{degraded}",
                t.kind, t.name, t.target, t.health, t.weight, t.detail
            );
        }
        let restored = if i.vips_restored > 0 {
            format!(", put back {} time(s) after someone else removed them", i.vips_restored)
        } else {
            String::new()
        };
        println!(
            "  VIPs {} ({}{restored}), adverts sent {} received {}, ignored {:?}",
            i.virtual_ips.join(" "),
            if i.holds_virtual_ips {
                "held"
            } else {
                "not held"
            },
            i.adverts_sent,
            i.adverts_received,
            i.ignored
        );
        for h in &i.heartbeats {
            println!(
                "  heartbeat link {} (peer {}): {}, adverts received {}, last {}",
                h.interface,
                h.peer,
                if h.link_up { "up" } else { "DOWN" },
                h.adverts_received,
                h.last_advert_ms_ago
                    .map_or("never".to_string(), |ms| format!("{ms} ms ago")),
            );
        }
        if let Some(d) = &i.detection {
            let ms = |v: Option<std::time::Duration>| {
                v.map_or("-".to_string(), |v| format!("{:.2}", v.as_secs_f64() * 1e3))
            };
            println!(
                "  fast detection: window {} ms (multiplier {}, {}, {}); master's gaps p50 {} / p99 {} / p99.9 {} / max {} ms over {} gaps; false takeovers {}",
                ms(d.window),
                d.multiplier,
                d.basis.map_or("-", |b| b.name()),
                if d.armed { "armed" } else { "not armed" },
                ms(d.p50),
                ms(d.p99),
                ms(d.p999),
                ms(d.max),
                d.gaps,
                i.false_takeovers
            );
        }
        if !i.advert_sender_cpus.is_empty() {
            println!("  fast adverts sent from CPUs {:?}", i.advert_sender_cpus);
        }
        if let Some(gaps) = &i.send_gaps {
            println!("  own fast stream: {}", gaps.summary());
        }
        if i.handed_over {
            println!(
                "  HANDED OVER: stays backup (no preemption, no fast takeover) until `wimark-ha switchover --back`"
            );
        }
        if let Some(fault) = &i.fault {
            println!("  DEGRADED: {fault}");
        }
        for t in &i.history {
            let us = |v: Option<std::time::Duration>| {
                v.map_or("-".to_string(), |v| {
                    format!("{:.3} ms", v.as_micros() as f64 / 1000.0)
                })
            };
            println!(
                "  {} {} -> {} ({}): silence {}, VIP added {}, GARP sent {}",
                t.at_unix_ms,
                t.from,
                t.to,
                t.why(),
                us(t.silence),
                us(t.vip_added),
                us(t.garp_sent)
            );
        }
    }
    for back in &status.aps_back {
        let d = &back.detail;
        let at = |p: f64| {
            d.percentile_ms(p)
                .map_or("-".to_string(), |ms| format!("{ms:.1} ms"))
        };
        println!(
            "APs back after {}'s latest takeover: {} of {} expected, after {:.1} ms (per AP p50 {}, p99 {}){}{}",
            back.instance,
            d.back,
            d.expected,
            back.after_ms,
            at(50.0),
            at(99.0),
            d.sessions.map_or(String::new(), |s| format!("; {s}")),
            if d.missing.is_empty() {
                String::new()
            } else {
                format!("; missing: {}", d.missing.join(", "))
            }
        );
    }
    if let Some(sync) = &status.ap_sync {
        let rejected: u64 = sync.rejected.values().sum();
        println!(
            "AP sync with {}: {} AP(s) known from the peer, {} datagram(s) accepted (last {}), {} sent, {} ignored{}",
            sync.peer.map_or("-".to_string(), |p| p.to_string()),
            sync.synced_aps,
            sync.datagrams_accepted,
            sync.last_accepted_ms_ago
                .map_or("never".to_string(), |ms| format!("{ms} ms ago")),
            sync.datagrams_sent,
            rejected,
            if rejected == 0 {
                String::new()
            } else {
                format!(" {:?}", sync.rejected)
            }
        );
        // With `ike_vici`: what the IKE daemon here lists, and the peer's
        // IKE_SAs (port and identity) known for the IKE hook.
        if sync.own_ike_peers.is_some() || sync.ike_vici_error.is_some() {
            println!(
                "  IKE daemon here: {} IKE_SA(s) on the VIPs{}; from the peer: {} IKE_SA(s) with port and identity",
                sync.own_ike_peers
                    .map_or("-".to_string(), |n| n.to_string()),
                sync.ike_vici_error
                    .as_ref()
                    .map(|e| format!(" (latest reading failed: {e})"))
                    .unwrap_or_default(),
                sync.synced_ike_peers
            );
        }
    }
    if let Some(w) = &status.witness {
        println!(
            "witness {} at {}: {}, lease {}, key {}{}{}",
            w.key,
            w.endpoints.join(", "),
            if w.reachable { "reachable" } else { "UNREACHABLE" },
            if w.holds_lease { "held" } else { "NONE" },
            if w.holds_key { "ours" } else { "not ours" },
            w.holder.as_ref().map(|h| format!(" (held by {h})")).unwrap_or_default(),
            w.problem.as_ref().map(|p| format!("; {p}")).unwrap_or_default(),
        );
        if w.waiting_since_unix_ms.is_some() {
            println!("  a promotion waits for the key: the master stack does not start before it is ours");
        }
    }
    if let Some(roles) = &status.roles {
        print_roles(roles);
    }
    if let Some(reason) = &status.journal.degraded {
        println!(
            "failover journal {}: DEGRADED: {reason}; {} entries not written (failover is not affected)",
            status.journal.path.display(),
            status.journal.lost
        );
    }
    for monitor in &status.monitors {
        print_monitor(monitor);
    }
    Ok(())
}

/// How full the AP table is and what it evicted, for `status`.
fn ap_table_fill(ap: &crate::monitor::ApStats) -> String {
    if ap.capacity == 0 {
        return String::new();
    }
    format!(
        " of {} ({:.0} % of the AP table), evicted {}",
        ap.capacity,
        ap.known_aps as f64 * 100.0 / ap.capacity as f64,
        ap.evicted
    )
}

/// One line of what the XDP monitor counted (`stats --json` has it all).
fn print_monitor(monitor: &crate::records::Snapshot) {
    println!(
        "monitor on {}: VRRP valid {}, tagged {}, invalid ({}); APs active {} known {}{}; IKE {} NAT-T {} MQTT {} packets; events lost: adverts {}, peer changes {}",
        monitor.interface,
        monitor.vrrp.valid,
        monitor.vrrp.tagged,
        monitor.vrrp.invalid,
        monitor.ap.active_aps,
        monitor.ap.known_aps,
        ap_table_fill(&monitor.ap),
        monitor.ap.ike.packets,
        monitor.ap.nat_t.packets,
        monitor.ap.mqtt.packets,
        monitor.advert_events_lost,
        monitor.peer_events_lost,
    );
}

fn print_roles(roles: &crate::records::RolesStatus) {
    println!("containers: {} stack", roles.stack);
    if let Some(reason) = &roles.degraded {
        println!("  DEGRADED: {reason}");
    }
    for process in &roles.processes {
        println!(
            "  role-bound `{}`: {}, restarts {}{}",
            process.argv,
            if process.running {
                "running"
            } else {
                "stopped"
            },
            process.restarts,
            process
                .last_exit
                .as_ref()
                .map_or(String::new(), |e| format!(", last exit: {e}"))
        );
    }
    for switch in &roles.history {
        println!("  {} {}", switch.at_unix_ms, switch.summary());
    }
}

pub fn switchover(args: SwitchoverArgs) -> anyhow::Result<()> {
    let request = Request::Switchover {
        instance: args.instance,
        back: args.back,
    };
    println!("{}", ask(&args.socket, &request, "switchover refused")?);
    Ok(())
}

/// A request that the daemon carries out: its message, or its refusal as
/// the error.
fn ask(socket: &std::path::Path, request: &Request, refused: &str) -> anyhow::Result<String> {
    let response = control::request(socket, request)?;
    if !response.ok {
        bail!("{}", response.error.unwrap_or_else(|| refused.to_string()));
    }
    Ok(response.message.unwrap_or_default())
}

pub fn restart(args: RestartArgs) -> anyhow::Result<()> {
    let asked_at = crate::clock::unix_ms();
    println!(
        "{}",
        ask(&args.socket, &Request::Restart, "restart refused")?
    );
    // The PID stays the same: the new process is the one started since.
    let deadline = std::time::Instant::now() + args.timeout;
    loop {
        if let Ok(control::Response {
            ok: true,
            status: Some(status),
            ..
        }) = control::request(&args.socket, &Request::Status)
        {
            // Instances appear once the new engine has run its first turn.
            if status.started_unix_ms >= asked_at && !status.instances.is_empty() {
                for i in &status.instances {
                    println!("{}: {}", i.name, i.state);
                }
                return Ok(());
            }
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "the daemon did not answer within {:?} of the restart; see its log (journalctl -u wimark-ha)",
                args.timeout
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
