//! Whether the APs can come back after a takeover: `[ap_recovery]` set,
//! an IKE hook, and — for the strongSwan adapter — a connection that does
//! not let MOBIKE move an AP's SA off the VIP (with MOBIKE on, a planned
//! switchover moved the SAs to the old master's own address) — and the
//! same of the servers' own IKE daemon's swanctl.conf (`ike_daemon_config`);
//! and whether the APs' IKE identities are synced (`ike_vici`), without
//! which an AP behind a NAT does not come back.
//!
//! Owns: those findings. Must not: connect to the IKE daemon or change
//! anything.

use std::{net::IpAddr, path::PathBuf};

use super::{bad, ok, swanctl, Finding, Status};
use crate::{
    config::{ApRecoveryConfig, Config},
    recovery::vici::IkeConfig,
};

const CHECK: &str = "ap recovery";

/// The adapter's `--config` when the IKE hook is `wimark-ha ike-initiate`.
fn adapter_config(argv: &[String]) -> Option<PathBuf> {
    let position = argv.iter().position(|a| a == "ike-initiate")?;
    let rest = &argv[position + 1..];
    match rest.iter().position(|a| a == "--config") {
        Some(i) => rest.get(i + 1).map(PathBuf::from),
        None => Some(PathBuf::from("/etc/wimark-ha/ike-initiate.toml")),
    }
}

pub fn check(config: &Config) -> Vec<Finding> {
    let Some(recovery) = &config.ap_recovery else {
        return vec![bad(
            Status::Warn,
            CHECK,
            "no [ap_recovery]: after a takeover the APs keep their stale IPsec SA (strongSwan's defaults: until rekey, hours; DPD 1 s: ~166 s) and MQTT waits for its keepalive",
            "configure [ap_recovery] (sync_key_file, ike_hook = wimark-ha ike-initiate): see the guide, \"Bringing the APs back\"",
        )];
    };
    let vips: Vec<IpAddr> = config
        .instances
        .iter()
        .filter(|i| i.name == recovery.instance)
        .flat_map(|i| i.virtual_ips.iter().map(|v| v.address))
        .collect();
    let mut findings = vec![
        hook_finding(recovery),
        ike_daemon_finding(&recovery.ike_daemon_config, &vips),
        identities_finding(recovery),
    ];
    findings.extend(hook_budget_finding(recovery));
    findings
}

/// IKE SAs a second that a server's charon sets up in the lab (2 vCPUs,
/// `aes128-sha256-modp2048`, docs/benchmarks.md: 85-139 at 1 000 APs):
/// the rate `doctor` assumes when it sizes the hook's timeout.
const ASSUMED_SAS_PER_SECOND: u32 = 100;

/// Whether `ike_hook_timeout` lets the adapter get through `max_aps` APs:
/// its per-AP timeout plus the APs at [`ASSUMED_SAS_PER_SECOND`]. A hook
/// killed at its timeout keeps what it reported, but the APs it had not
/// reached are left to their own retries.
fn hook_budget_finding(recovery: &ApRecoveryConfig) -> Option<Finding> {
    let hook = recovery.ike_hook.as_ref()?;
    let per_ap = adapter_config(hook)
        .and_then(|path| IkeConfig::load(&path).ok())
        .map_or(crate::recovery::vici::DEFAULT_TIMEOUT, |adapter| adapter.timeout);
    let needed = per_ap
        + std::time::Duration::from_secs_f64(
            f64::from(recovery.max_aps) / f64::from(ASSUMED_SAS_PER_SECOND),
        );
    if recovery.ike_hook_timeout >= needed {
        return Some(ok(
            CHECK,
            format!(
                "ike_hook_timeout {:?} covers max_aps {} at ~{ASSUMED_SAS_PER_SECOND} IKE SAs a second",
                recovery.ike_hook_timeout, recovery.max_aps
            ),
        ));
    }
    let suggested = needed.as_secs().div_ceil(10) * 10;
    Some(bad(
        Status::Warn,
        CHECK,
        format!(
            "ike_hook_timeout {:?} is short for max_aps {}: at ~{ASSUMED_SAS_PER_SECOND} IKE SAs a second (a 2-vCPU server, docs/benchmarks.md) the adapter needs ~{} s (its per-AP timeout {:?} + the APs); a hook killed then reports the APs it reached, the rest wait for their own retries",
            recovery.ike_hook_timeout,
            recovery.max_aps,
            needed.as_secs(),
            per_ap
        ),
        format!("set ike_hook_timeout = \"{suggested}s\" (or max_aps to the pair's AP count, or measure your IKE daemon's rate)"),
    ))
}

/// `ike_vici`: set, and a socket there (not connected to: the daemon reads
/// it every 5 s and says in `status` when it cannot).
fn identities_finding(recovery: &ApRecoveryConfig) -> Finding {
    use std::os::unix::fs::FileTypeExt as _;
    let Some(socket) = &recovery.ike_vici else {
        return bad(
            Status::Warn,
            CHECK,
            "[ap_recovery] has no ike_vici: the APs' IKE_SAs are not synced — of several APs behind one NAT address only one (the latest port seen) is initiated after a takeover, and each AP's address stands in for its IKE identity",
            "set ike_vici = \"/var/run/charon.vici\" (the IKE container's vici socket, mounted where wimark-ha can reach it)",
        );
    };
    match std::fs::metadata(socket) {
        Ok(metadata) if metadata.file_type().is_socket() => ok(
            CHECK,
            format!(
                "the APs' IKE identities are read from {} and synced",
                socket.display()
            ),
        ),
        Ok(_) => bad(
            Status::Fail,
            CHECK,
            format!("ike_vici {} is not a socket", socket.display()),
            "point ike_vici at charon's vici socket",
        ),
        Err(e) => bad(
            Status::Warn,
            CHECK,
            format!(
                "ike_vici {}: {e} (the IKE daemon down, or its socket not mounted here): identities are not synced while it is missing",
                socket.display()
            ),
            "mount the IKE container's vici socket where wimark-ha can reach it",
        ),
    }
}

fn hook_finding(recovery: &ApRecoveryConfig) -> Finding {
    let Some(hook) = &recovery.ike_hook else {
        return bad(
            Status::Warn,
            CHECK,
            "[ap_recovery] has no ike_hook: MQTT is kicked, but AP tunnels are left to the APs' own retries",
            "set ike_hook = [\"/usr/sbin/wimark-ha\", \"ike-initiate\", \"--config\", \"/etc/wimark-ha/ike-initiate.toml\"]",
        );
    };
    let Some(path) = adapter_config(hook) else {
        return ok(
            CHECK,
            format!(
                "IKE hook {} (not the strongSwan adapter: its MOBIKE not checked)",
                hook[0]
            ),
        );
    };
    let adapter = match IkeConfig::load(&path) {
        Ok(adapter) => adapter,
        Err(e) => {
            return bad(
                Status::Fail,
                CHECK,
                format!("the IKE adapter's config: {e}"),
                "fix it (`wimark-ha ike-initiate --config` reads it at every takeover)",
            )
        }
    };
    let mobike_off = matches!(
        adapter.connection.get("mobike"),
        Some(toml::Value::Boolean(false))
    ) || matches!(
        adapter.connection.get("mobike"),
        Some(toml::Value::String(s)) if s == "no"
    );
    if !mobike_off {
        return bad(
            Status::Warn,
            CHECK,
            format!(
                "{}: [connection] leaves MOBIKE on (strongSwan's default): a planned switchover lets the old master move the APs' SAs to its own address, off the VIP",
                path.display()
            ),
            "set mobike = false in [connection]",
        );
    }
    ok(
        CHECK,
        format!(
            "AP table synced with {}, IKE hook: the strongSwan adapter ({}), MOBIKE off",
            recovery.sync_peer,
            path.display()
        ),
    )
}

/// Whether a connection with these `local_addrs` answers on the VIP:
/// unset or `%any` answers on every address.
fn serves_vip(local_addrs: &[String], vips: &[IpAddr]) -> bool {
    local_addrs.is_empty()
        || local_addrs.iter().any(|entry| {
            let entry = entry.as_str();
            if entry.starts_with("%any") {
                return true;
            }
            match entry.split_once('/') {
                None => entry.parse::<IpAddr>().is_ok_and(|a| vips.contains(&a)),
                Some((network, prefix)) => {
                    match (network.parse::<IpAddr>(), prefix.parse::<u8>()) {
                        (Ok(network), Ok(prefix)) => {
                            vips.iter().any(|vip| contains(network, prefix, *vip))
                        }
                        _ => false,
                    }
                }
            }
        })
}

fn contains(network: IpAddr, prefix: u8, address: IpAddr) -> bool {
    match (network, address) {
        (IpAddr::V4(n), IpAddr::V4(a)) if prefix <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) if prefix <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// The servers' own IKE daemon: every connection that answers on the VIP
/// must say `mobike = no`.
fn ike_daemon_finding(files: &[PathBuf], vips: &[IpAddr]) -> Finding {
    const FIX: &str = "set mobike = no in each AP connection of the IKE daemon's swanctl.conf (and reload it: swanctl --load-conns)";
    if files.is_empty() {
        return bad(
            Status::Warn,
            CHECK,
            "the IKE daemon's own config is not checked: with MOBIKE on there (strongSwan's default), a planned switchover moves the APs' SAs to the old master's address, off the VIP",
            "set [ap_recovery] ike_daemon_config = [\"/path/to/the/containers/swanctl.conf\"]",
        );
    }
    let mut moved = Vec::new();
    let mut checked = 0;
    for file in files {
        let connections = match swanctl::connections(file) {
            Ok(connections) => connections,
            Err(e) => {
                return bad(
                    Status::Fail,
                    CHECK,
                    format!("the IKE daemon's config: {e}"),
                    "fix the path in [ap_recovery] ike_daemon_config, or the file",
                )
            }
        };
        for connection in connections
            .iter()
            .filter(|c| serves_vip(&c.local_addrs, vips))
        {
            checked += 1;
            if connection.mobike_on() {
                moved.push(format!(
                    "{}:{} `{}`",
                    connection.file.display(),
                    connection.line,
                    connection.name
                ));
            }
        }
    }
    if !moved.is_empty() {
        return bad(
            Status::Warn,
            CHECK,
            format!(
                "MOBIKE is on for connections that answer on the VIP: {} — a planned switchover moves their APs' SAs to the old master's own address, off the VIP",
                moved.join(", ")
            ),
            FIX,
        );
    }
    if checked == 0 {
        return bad(
            Status::Warn,
            CHECK,
            format!(
                "no connection in {} answers on the VIP: is this the IKE daemon the APs reach?",
                files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
            "point [ap_recovery] ike_daemon_config at the swanctl.conf of the containers that answer the APs",
        );
    }
    ok(
        CHECK,
        format!("the IKE daemon's {checked} connection(s) on the VIP keep MOBIKE off"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[[instance]]\nname = \"WIM1\"\ninterface = \"eth1\"\nvrid = 67\npriority = 200\nvirtual_ips = [\"10.10.10.3/24\"]\n\n{extra}"
        );
        crate::config::parse(&text, std::path::Path::new("t.toml")).expect("valid")
    }

    const ADAPTER: &str = "child = \"tunnel\"\n[connection]\nlocal_addrs = [\"10.10.10.3\"]\n%MOBIKE%\n[connection.children.tunnel]\nlocal_ts = [\"10.99.0.1/32\"]\n";

    fn with_adapter(mobike: &str) -> (Config, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "wimark-ha-doctor-apr-{}-{}",
            std::process::id(),
            mobike.len()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("ike-initiate.toml");
        std::fs::write(&path, ADAPTER.replace("%MOBIKE%", mobike)).expect("adapter");
        let config = config(&format!(
            "[ap_recovery]\nsync_key_file = \"/etc/wimark-ha/ap-sync.key\"\nsync_peer = \"10.10.10.2\"\nike_hook = [\"/usr/sbin/wimark-ha\", \"ike-initiate\", \"--config\", \"{}\"]\n",
            path.display()
        ));
        (config, dir)
    }

    #[test]
    fn missing_recovery_or_hook_is_a_warning() {
        assert_eq!(check(&config(""))[0].status, Status::Warn);
        let no_hook = config(
            "[ap_recovery]\nsync_key_file = \"/etc/wimark-ha/ap-sync.key\"\nsync_peer = \"10.10.10.2\"\n",
        );
        let finding = &check(&no_hook)[0];
        assert_eq!(finding.status, Status::Warn);
        assert!(finding.detail.contains("no ike_hook"), "{finding:?}");
    }

    #[test]
    fn mobike_left_on_is_a_warning_and_off_is_ok() {
        let (on, dir) = with_adapter("");
        let finding = &check(&on)[0];
        assert_eq!(finding.status, Status::Warn, "{finding:?}");
        assert!(finding.detail.contains("MOBIKE"), "{finding:?}");
        let _ = std::fs::remove_dir_all(dir);
        let (off, dir) = with_adapter("mobike = false");
        let finding = &check(&off)[0];
        assert_eq!(finding.status, Status::Ok, "{finding:?}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn identities_not_synced_are_a_warning_and_a_socket_is_ok() {
        let base = "[ap_recovery]\nsync_key_file = \"/etc/wimark-ha/ap-sync.key\"\nsync_peer = \"10.10.10.2\"\n";
        let finding = &check(&config(base))[2];
        assert_eq!(finding.status, Status::Warn, "{finding:?}");
        assert!(finding.detail.contains("no ike_vici"), "{finding:?}");
        let dir = std::env::temp_dir().join(format!("wimark-ha-doctor-vici-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let socket = dir.join("charon.vici");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("socket");
        let with = |path: &std::path::Path| {
            config(&format!("{base}ike_vici = \"unix://{}\"\n", path.display()))
        };
        let finding = &check(&with(&socket))[2];
        assert_eq!(finding.status, Status::Ok, "{finding:?}");
        let file = dir.join("plain-file");
        std::fs::write(&file, "").expect("file");
        assert_eq!(check(&with(&file))[2].status, Status::Fail);
        let missing = &check(&with(&dir.join("gone.vici")))[2];
        assert_eq!(missing.status, Status::Warn, "{missing:?}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_unreadable_adapter_config_fails() {
        let broken = config(
            "[ap_recovery]\nsync_key_file = \"/etc/wimark-ha/ap-sync.key\"\nsync_peer = \"10.10.10.2\"\nike_hook = [\"/usr/sbin/wimark-ha\", \"ike-initiate\", \"--config\", \"/nonexistent/ike.toml\"]\n",
        );
        let finding = &check(&broken)[0];
        assert_eq!(finding.status, Status::Fail, "{finding:?}");
        assert!(
            finding.detail.contains("/nonexistent/ike.toml"),
            "{finding:?}"
        );
    }

    #[test]
    fn the_ike_daemons_connections_on_the_vip_must_keep_mobike_off() {
        let dir = std::env::temp_dir().join(format!("wimark-ha-doctor-ike-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let vips: Vec<IpAddr> = vec!["10.10.10.3".parse().expect("vip")];
        let conf = |name: &str, body: &str| {
            let path = dir.join(name);
            std::fs::write(&path, format!("connections {{\n{body}}}\n")).expect("write");
            vec![path]
        };
        let off = conf("off.conf", "  aps {\n    local_addrs = 10.10.10.3\n    mobike = no\n  }\n  other {\n    local_addrs = 192.0.2.1\n  }\n");
        let finding = ike_daemon_finding(&off, &vips);
        assert_eq!(finding.status, Status::Ok, "{finding:?}");
        assert!(finding.detail.contains("1 connection"), "{finding:?}");
        // Unset local_addrs answers on every address, the VIP too.
        let any = conf("any.conf", "  aps {\n    mobike = yes\n  }\n");
        let finding = ike_daemon_finding(&any, &vips);
        assert_eq!(finding.status, Status::Warn, "{finding:?}");
        assert!(finding.detail.contains("any.conf:2 `aps`"), "{finding:?}");
        let subnet = conf(
            "subnet.conf",
            "  aps {\n    local_addrs = 10.10.10.0/24\n  }\n",
        );
        assert_eq!(ike_daemon_finding(&subnet, &vips).status, Status::Warn);
        let elsewhere = conf(
            "elsewhere.conf",
            "  mgmt {\n    local_addrs = 192.0.2.1\n  }\n",
        );
        let finding = ike_daemon_finding(&elsewhere, &vips);
        assert_eq!(finding.status, Status::Warn, "{finding:?}");
        assert!(finding.detail.contains("no connection"), "{finding:?}");
        let broken = conf("broken.conf", "  aps {\n    mobike no\n  }\n");
        let finding = ike_daemon_finding(&broken, &vips);
        assert_eq!(finding.status, Status::Fail, "{finding:?}");
        assert!(finding.detail.contains("broken.conf:3"), "{finding:?}");
        let finding = ike_daemon_finding(&[], &vips);
        assert_eq!(finding.status, Status::Warn);
        assert!(finding.detail.contains("not checked"), "{finding:?}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_hook_timeout_short_for_max_aps_is_a_warning() {
        let base = "[ap_recovery]\nsync_key_file = \"/etc/wimark-ha/ap-sync.key\"\nsync_peer = \"10.10.10.2\"\nike_hook = [\"/usr/local/bin/my-hook\"]\n";
        // The defaults: 2 048 APs need ~26 s, the timeout is 10 s.
        let finding = &check(&config(base))[3];
        assert_eq!(finding.status, Status::Warn, "{finding:?}");
        assert!(finding.detail.contains("max_aps 2048"), "{finding:?}");
        assert!(finding.fix.as_deref().is_some_and(|f| f.contains("30s")), "{finding:?}");
        let sized = config(&format!("{base}max_aps = 300\n"));
        assert_eq!(check(&sized)[3].status, Status::Ok, "{:?}", check(&sized)[3]);
        let long = config(&format!("{base}ike_hook_timeout = \"30s\"\n"));
        assert_eq!(check(&long)[3].status, Status::Ok);
        // No hook, nothing to size.
        let no_hook = config("[ap_recovery]\nsync_key_file = \"/etc/wimark-ha/ap-sync.key\"\nsync_peer = \"10.10.10.2\"\n");
        assert_eq!(check(&no_hook).len(), 3);
    }

    #[test]
    fn ike_daemon_config_must_be_absolute() {
        let text = "[[instance]]\nname = \"WIM1\"\ninterface = \"eth1\"\nvrid = 67\npriority = 200\nvirtual_ips = [\"10.10.10.3/24\"]\n\n[ap_recovery]\nsync_key_file = \"/k\"\nsync_peer = \"10.10.10.2\"\nike_daemon_config = [\"swanctl.conf\"]\n";
        let error =
            crate::config::parse(text, std::path::Path::new("t.toml")).expect_err("relative");
        let message = error.to_string();
        assert!(
            message.contains("ap_recovery.ike_daemon_config"),
            "{message}"
        );
        assert!(message.contains("t.toml:11"), "{message}");
    }
}
