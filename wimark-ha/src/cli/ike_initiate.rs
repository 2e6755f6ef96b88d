//! `wimark-ha ike-initiate`: the strongSwan adapter as a recovery hook —
//! the AP list (JSON) on stdin, one JSON outcome per AP on stdout.

use std::{io::Read as _, path::PathBuf};

use anyhow::Context as _;
use clap::Args;

use crate::recovery::{vici, ApList, ApResult};

#[derive(Debug, Args)]
pub struct IkeInitiateArgs {
    /// The adapter's config: vici socket, CHILD_SA, timeout and the
    /// connection (swanctl.conf's `connections.<name>` as TOML).
    #[arg(long, default_value = "/etc/wimark-ha/ike-initiate.toml")]
    pub config: PathBuf,
}

/// At most this much JSON is read from stdin (64 Ki APs fit).
const MAX_INPUT: u64 = 8 << 20;

/// Exit 0: every AP's CHILD_SA is up; 1: some failed (each says why on
/// stdout); 2: the config or the input could not be read.
pub async fn run(args: IkeInitiateArgs) -> anyhow::Result<i32> {
    let config = vici::IkeConfig::load(&args.config)?;
    for note in &config.notes {
        eprintln!("ike-initiate: {note}");
    }
    let mut text = String::new();
    std::io::stdin()
        .take(MAX_INPUT + 1)
        .read_to_string(&mut text)
        .context("reading the AP list from stdin")?;
    if text.len() as u64 > MAX_INPUT {
        anyhow::bail!("the AP list on stdin is larger than {MAX_INPUT} bytes");
    }
    let list: ApList = serde_json::from_str(&text)
        .context("the AP list on stdin is not the documented JSON ({\"aps\":[{\"address\":…}]})")?;
    // Each outcome is printed as its AP ends: a caller that kills us at its
    // own timeout (the daemon's `ike_hook_timeout`) keeps those.
    let (ended_tx, mut ended) = tokio::sync::mpsc::unbounded_channel();
    let (config_ref, list_ref) = (&config, &list);
    let initiating = async move {
        // The sender goes with this future: its end closes the channel.
        vici::initiate_all(config_ref, list_ref, Some(&ended_tx)).await
    };
    let printing = async {
        while let Some(outcome) = ended.recv().await {
            println!("{}", serde_json::to_string(&outcome)?);
        }
        anyhow::Ok(())
    };
    let (outcomes, printed) = tokio::join!(initiating, printing);
    printed?;
    let mut failed = 0;
    let mut timed_out = 0;
    let mut slowest_ms: f64 = 0.0;
    for outcome in &outcomes {
        if !outcome.ok {
            failed += 1;
        }
        if outcome.result == Some(ApResult::TimedOut) {
            timed_out += 1;
        }
        slowest_ms = slowest_ms.max(outcome.took_ms);
    }
    eprintln!(
        "ike-initiate: {} of {} AP(s) up through {} ({} failed, {} of them timed out; slowest {:.0} ms, at most {} at once)",
        outcomes.len() - failed,
        outcomes.len(),
        config.vici.display(),
        failed,
        timed_out,
        slowest_ms,
        config.in_flight
    );
    Ok(if failed == 0 { 0 } else { 1 })
}
