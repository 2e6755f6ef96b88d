//! `wimark-ha history`: the failover journal, read from disk, so it works
//! whether or not the daemon runs.

use std::path::PathBuf;

use clap::Args;

use crate::{
    config::DEFAULT_STATE_DIR,
    history::{self, Entry},
};

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The daemon's state directory (`[daemon] state_dir`).
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Only the last N entries.
    #[arg(long)]
    pub last: Option<usize>,
    /// Print a JSON array of the entries instead.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: HistoryArgs) -> anyhow::Result<()> {
    let read = history::read(&args.state_dir)?;
    if read.damaged > 0 {
        eprintln!(
            "{}: {} damaged line(s) skipped (a crash mid-write?)",
            args.state_dir.display(),
            read.damaged
        );
    }
    if read.skipped_bytes > 0 {
        eprintln!(
            "{}: over its bound; its oldest {} bytes not read",
            args.state_dir.display(),
            read.skipped_bytes
        );
    }
    let skip = args
        .last
        .map_or(0, |last| read.entries.len().saturating_sub(last));
    let entries = &read.entries[skip..];
    if args.json {
        println!("{}", serde_json::to_string(entries)?);
        return Ok(());
    }
    if entries.is_empty() {
        println!("{}: no failover history yet", args.state_dir.display());
    }
    for entry in entries {
        println!("{}", describe(entry));
    }
    Ok(())
}

fn describe(entry: &Entry) -> String {
    let ms = |d: Option<std::time::Duration>| {
        d.map_or("-".to_string(), |d| {
            format!("{:.3} ms", d.as_micros() as f64 / 1e3)
        })
    };
    match entry {
        Entry::Transition { instance, record } => format!(
            "{} {instance}: {} -> {} ({}); silence {}, VIP added {}, GARP sent {}",
            record.at_unix_ms,
            record.from,
            record.to,
            record.why(),
            ms(record.silence),
            ms(record.vip_added),
            ms(record.garp_sent)
        ),
        Entry::Containers { instance, record } => format!(
            "{} {instance}: containers {}",
            record.at_unix_ms,
            record.summary()
        ),
        Entry::ApsBack {
            instance,
            at_unix_ms,
            after_ms,
            per_ap: None,
        } => format!("{at_unix_ms} {instance}: APs back after {after_ms:.1} ms"),
        Entry::ApsBack {
            instance,
            at_unix_ms,
            after_ms,
            per_ap: Some(detail),
        } => {
            let at = |p: f64| {
                detail
                    .percentile_ms(p)
                    .map_or("-".to_string(), |ms| format!("{ms:.1} ms"))
            };
            let missing = if detail.missing.is_empty() {
                String::new()
            } else {
                format!(
                    "; missing: {}{}",
                    detail.missing.join(", "),
                    if detail.expected - detail.back > detail.missing.len() {
                        " …"
                    } else {
                        ""
                    }
                )
            };
            if detail.expected == 0 {
                return format!(
                    "{at_unix_ms} {instance}: APs back: the first AP opened a session after {after_ms:.1} ms (no AP was known before the takeover)"
                );
            }
            format!(
                "{at_unix_ms} {instance}: APs back: {} of {} expected after {after_ms:.1} ms (per AP p50 {}, p99 {}){}{}{missing}",
                detail.back,
                detail.expected,
                at(50.0),
                at(99.0),
                detail.sessions.map_or(String::new(), |s| format!("; {s}")),
                if detail.superseded { " (cut short by the next takeover)" } else { "" },
            )
        }
        Entry::Tracker {
            instance,
            at_unix_ms,
            tracker,
            priority,
        } => format!(
            "{at_unix_ms} {instance}: track {} {} {} ({}): {}; priority now {priority}",
            tracker.kind,
            tracker.name,
            tracker.health,
            tracker.detail,
            if tracker.fault {
                "holds FAULT".to_string()
            } else {
                format!("weight {:+} in force", tracker.weight_in_force)
            }
        ),
        Entry::FalseTakeover {
            instance,
            at_unix_ms,
            peer,
            gap,
            window,
            window_after,
        } => format!(
            "{at_unix_ms} {instance}: FALSE takeover: {peer} was silent {} (window {}) and spoke again: late, not dead; window now {}",
            ms(*gap),
            ms(*window),
            ms(*window_after)
        ),
        Entry::ApRecovery {
            instance,
            at_unix_ms,
            record,
        } => {
            let ike = match &record.ike {
                None => "no IKE hook".to_string(),
                Some(ike) => format!(
                    "IKE initiated to {} AP(s), {} failed{}, in {:.1} ms{}{}",
                    ike.ok,
                    ike.failed,
                    if ike.timed_out > 0 {
                        format!(" ({} timed out)", ike.timed_out)
                    } else {
                        String::new()
                    },
                    ike.took_ms,
                    ike.error
                        .as_ref()
                        .map_or(String::new(), |e| format!("; hook: {e}")),
                    if ike.failures.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", ike.failures.join("; "))
                    }
                ),
            };
            let mqtt = match &record.mqtt {
                None => String::new(),
                Some(kick) => format!(
                    "; MQTT: {} connection(s) kicked ({} with their own sequence numbers){}{}",
                    kick.connections,
                    kick.informed,
                    if kick.beyond_bound == 0 {
                        String::new()
                    } else {
                        format!(
                            "; {} beyond {} per AP not kicked",
                            kick.beyond_bound,
                            crate::recovery::mqtt::MAX_MQTT_PER_AP
                        )
                    },
                    if kick.errors.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", kick.errors.join("; "))
                    }
                ),
            };
            format!(
                "{at_unix_ms} {instance}: AP recovery: {} AP(s) expected ({} synced from the peer); {ike}{mqtt}",
                record.expected, record.synced
            )
        }
    }
}
