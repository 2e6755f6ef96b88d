//! `cargo xtask bench failover`: failover timelines from a capture on the lab
//! bridge and the AP's probe stream, wimark-ha beside keepalived, each trial
//! in a fresh lab with the failure instant randomised within one advert
//! interval.

use anyhow::Result;
use wimark_ha::vrrp::Multiplier;
use wimark_ha_tests::failover_lab::{multiplier_toml, FailoverLab, Failure, Pair, Timeline};

struct Scenario {
    pair: Pair,
    failure: Failure,
    trials: usize,
    /// wimark-ha's `fast_detect.multiplier` (the packaged default: auto).
    multiplier: Multiplier,
    /// Both cores saturated (stress-ng in both servers) from before the
    /// failure until after it.
    saturated: bool,
}

impl Scenario {
    fn new(pair: Pair, failure: Failure, trials: usize) -> Self {
        Self {
            pair,
            failure,
            trials,
            multiplier: Multiplier::Auto,
            saturated: false,
        }
    }

    fn label(&self) -> String {
        let pair = match self.pair {
            Pair::WimarkHaFast => format!(
                "wimark-ha (VRRPv3 10 ms, fast detection 1 ms x {}{})",
                multiplier_toml(self.multiplier).trim_matches('"'),
                if self.multiplier == Multiplier::Auto {
                    ": the packaged default"
                } else {
                    ""
                }
            ),
            other => other.name().to_string(),
        };
        if self.saturated {
            format!("{pair}, both cores saturated")
        } else {
            pair
        }
    }
}

struct Figures {
    /// The backup's fast-rule window at each failure (wimark-ha).
    window: Vec<f64>,
    takeover: Vec<f64>,
    gap: Vec<f64>,
    lost: Vec<u64>,
    missing: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank: with few trials p99 is the maximum, as it should be.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn summary(values: &[f64]) -> (f64, f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    (
        sorted.first().copied().unwrap_or(f64::NAN),
        percentile(&sorted, 50.0),
        percentile(&sorted, 99.0),
        sorted.last().copied().unwrap_or(f64::NAN),
    )
}

/// How long the saturation runs before the failure: auto mode widens its
/// window from the saturated gaps it sees meanwhile.
const SATURATED_BEFORE: std::time::Duration = std::time::Duration::from_secs(5);

fn trial(scenario: &Scenario) -> Result<Timeline> {
    let mut lab = FailoverLab::with_options(scenario.pair, Default::default(), scenario.multiplier)?;
    if scenario.saturated {
        lab.saturate()?;
        std::thread::sleep(SATURATED_BEFORE);
    }
    lab.fail(scenario.failure)
}

pub fn run(trials: usize, vendor_trials: usize, svg: &std::path::Path) -> Result<()> {
    let scenarios = [
        Scenario::new(Pair::WimarkHaFast, Failure::NodeLoss, trials),
        Scenario {
            multiplier: Multiplier::Fixed(3),
            ..Scenario::new(Pair::WimarkHaFast, Failure::NodeLoss, trials)
        },
        Scenario::new(Pair::KeepalivedV3Fast, Failure::NodeLoss, trials),
        Scenario::new(Pair::KeepalivedVendor, Failure::NodeLoss, vendor_trials),
        Scenario {
            saturated: true,
            ..Scenario::new(Pair::WimarkHaFast, Failure::NodeLoss, trials)
        },
        Scenario {
            saturated: true,
            ..Scenario::new(Pair::KeepalivedV3Fast, Failure::NodeLoss, trials)
        },
        Scenario::new(Pair::WimarkHaFast, Failure::KillDaemon, trials),
        Scenario::new(Pair::KeepalivedV3Fast, Failure::KillDaemon, trials),
        Scenario::new(Pair::WimarkHaFast, Failure::Switchover, trials),
        Scenario::new(Pair::KeepalivedV3Fast, Failure::Switchover, trials),
    ];
    let mut results = Vec::new();
    for scenario in &scenarios {
        let mut figures = Figures {
            window: Vec::new(),
            takeover: Vec::new(),
            gap: Vec::new(),
            lost: Vec::new(),
            missing: 0,
        };
        for n in 0..scenario.trials {
            let timeline = trial(scenario)?;
            match timeline.takeover_ms {
                Some(ms) => figures.takeover.push(ms),
                None => figures.missing += 1,
            }
            figures.gap.push(timeline.probe_gap_ms);
            figures.window.extend(timeline.window_ms);
            figures.lost.push(timeline.probes_lost);
            let reported = timeline.reported.as_ref().map(|r| {
                format!(
                    "; the new master says: {}, silence {:?}, GARP {:?} after the decision",
                    r.reason, r.silence, r.garp_sent
                )
            });
            eprintln!(
                "bench: {} / {} trial {}: takeover {:?} ms, probe gap {:.1} ms, {} lost, window {:?} ms{}",
                scenario.label(),
                scenario.failure.name(),
                n + 1,
                timeline.takeover_ms.map(|v| (v * 1000.0).round() / 1000.0),
                timeline.probe_gap_ms,
                timeline.probes_lost,
                timeline.window_ms,
                reported.unwrap_or_default()
            );
        }
        results.push((scenario, figures));
    }

    println!("## Failover (`cargo xtask bench failover -- --trials {trials} --vendor-trials {vendor_trials}`)\n");
    println!("Takeover = the old active's last advert to the new active's first gratuitous ARP, both as captured on the lab bridge.");
    println!(
        "Probe gap = the longest silence in the replies to the AP's 1 kHz UDP probes to the VIP.\n"
    );
    println!("The window is the backup's fast-rule window just before the failure (auto: learned from the stream so far).\n");
    println!("| pair | failure | trials | takeover min / median / p99 / max (ms) | probe gap median / max (ms) | probes lost (max) | window median / max (ms) |");
    println!("|---|---|---:|---|---|---:|---|");
    let mut medians = Vec::new();
    for (scenario, f) in &results {
        let (min, median, p99, max) = summary(&f.takeover);
        let (_, gap_median, _, gap_max) = summary(&f.gap);
        let missing = if f.missing > 0 {
            format!(" ({} without a capture)", f.missing)
        } else {
            String::new()
        };
        let window = if f.window.is_empty() {
            "-".to_string()
        } else {
            let (_, w_median, _, w_max) = summary(&f.window);
            format!("{w_median:.1} / {w_max:.1}")
        };
        println!(
            "| {} | {} | {}{missing} | {min:.2} / {median:.2} / {p99:.2} / {max:.2} | {gap_median:.1} / {gap_max:.1} | {} | {window} |",
            scenario.label(),
            scenario.failure.name(),
            scenario.trials,
            f.lost.iter().max().copied().unwrap_or(0)
        );
        medians.push((scenario.label(), scenario.failure, p99, median, gap_max));
    }
    println!();
    let rows: Vec<super::plot::Row> = results
        .iter()
        .map(|(scenario, f)| super::plot::Row {
            label: format!("{} / {}", scenario.label(), scenario.failure.name()),
            ours: scenario.pair == Pair::WimarkHaFast,
            takeover_ms: f.takeover.clone(),
            gap_ms: f.gap.clone(),
        })
        .collect();
    if let Some(dir) = svg.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(svg, super::plot::svg(&rows))?;
    println!("Every trial is plotted in `{}`.\n", svg.display());
    let ours_label = |saturated| {
        Scenario {
            saturated,
            ..Scenario::new(Pair::WimarkHaFast, Failure::NodeLoss, 0)
        }
        .label()
    };
    let theirs_label = |saturated| {
        Scenario {
            saturated,
            ..Scenario::new(Pair::KeepalivedV3Fast, Failure::NodeLoss, 0)
        }
        .label()
    };
    for (failure, saturated) in [
        (Failure::NodeLoss, false),
        (Failure::NodeLoss, true),
        (Failure::KillDaemon, false),
        (Failure::Switchover, false),
    ] {
        let ours = medians
            .iter()
            .find(|m| m.1 == failure && m.0 == ours_label(saturated));
        let theirs = medians
            .iter()
            .find(|m| m.1 == failure && m.0 == theirs_label(saturated));
        if let (Some(ours), Some(theirs)) = (ours, theirs) {
            println!(
                "{}{}: keepalived at 10 ms / wimark-ha's packaged default, median takeover {:.1}x, p99 {:.1}x, worst probe gap {:.1}x",
                failure.name(),
                if saturated { ", both cores saturated" } else { "" },
                theirs.3 / ours.3,
                theirs.2 / ours.2,
                theirs.4 / ours.4.max(0.001)
            );
        }
    }
    Ok(())
}
