//! A keepalived still running in this network namespace on one of our
//! VRIDs: two VRRP speakers for one VIP.

use std::path::Path;

use super::{bad, ok, Finding, Status};
use crate::config::Config;

/// A keepalived running here with one of our VRIDs fights over the VIP.
pub(super) fn keepalived_conflict(config: Option<&Config>) -> Finding {
    let ours: Vec<u8> = config
        .map(|c| c.instances.iter().map(|i| i.vrid).collect())
        .unwrap_or_default();
    let mut running = Vec::new();
    // Only a keepalived in this network namespace can take our VIP.
    let netns = |pid: &Path| std::fs::read_link(pid.join("ns/net")).ok();
    let ours_netns = netns(Path::new("/proc/self"));
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim() != "keepalived" || netns(&entry.path()) != ours_netns {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        let conf = args
            .iter()
            .position(|a| a == "-f" || a == "--use-file")
            .and_then(|i| args.get(i + 1).cloned())
            .or_else(|| {
                args.iter()
                    .find_map(|a| a.strip_prefix("--use-file=").map(str::to_string))
            })
            .unwrap_or_else(|| "/etc/keepalived/keepalived.conf".to_string());
        running.push((entry.file_name().to_string_lossy().to_string(), conf));
    }
    if running.is_empty() {
        return ok("keepalived", "not running");
    }
    for (pid, conf) in &running {
        let vrids = keepalived_vrids(Path::new(conf));
        if let Some(vrid) = vrids.iter().find(|v| ours.contains(v)) {
            return bad(
                Status::Fail,
                "keepalived",
                format!(
                    "keepalived (pid {pid}, {conf}) runs VRID {vrid}, which this config uses too"
                ),
                "systemctl disable --now keepalived (wimark-ha replaces it)",
            );
        }
    }
    bad(
        Status::Warn,
        "keepalived",
        format!(
            "keepalived is running (pid {}) on other VRIDs",
            running
                .iter()
                .map(|(p, _)| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        "make sure it does not manage the same VIP",
    )
}

fn keepalived_vrids(conf: &Path) -> Vec<u8> {
    let Ok(text) = std::fs::read_to_string(conf) else {
        return Vec::new();
    };
    let Ok(statements) = crate::import::parse_keepalived(&text, conf) else {
        return Vec::new();
    };
    statements
        .iter()
        .filter(|s| s.words.first().map(String::as_str) == Some("vrrp_instance"))
        .flat_map(|s| s.block.iter().flatten())
        .filter(|s| s.words.first().map(String::as_str) == Some("virtual_router_id"))
        .filter_map(|s| s.words.get(1).and_then(|v| v.parse().ok()))
        .collect()
}
