//! Whether the APs can come back after a takeover: `[ap_recovery]` set,
//! an IKE hook, and — for the strongSwan adapter — a connection that does
//! not let MOBIKE move an AP's SA off the VIP (with MOBIKE on, a planned
//! switchover moved the SAs to the old master's own address).
//!
//! Owns: those findings. Must not: connect to the IKE daemon or change
//! anything.

use std::path::PathBuf;

use super::{bad, ok, Finding, Status};
use crate::{config::Config, recovery::vici::IkeConfig};

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
    let Some(hook) = &recovery.ike_hook else {
        return vec![bad(
            Status::Warn,
            CHECK,
            "[ap_recovery] has no ike_hook: MQTT is kicked, but AP tunnels are left to the APs' own retries",
            "set ike_hook = [\"/usr/sbin/wimark-ha\", \"ike-initiate\", \"--config\", \"/etc/wimark-ha/ike-initiate.toml\"]",
        )];
    };
    let Some(path) = adapter_config(hook) else {
        return vec![ok(
            CHECK,
            format!(
                "IKE hook {} (not the strongSwan adapter: MOBIKE not checked)",
                hook[0]
            ),
        )];
    };
    let adapter = match IkeConfig::load(&path) {
        Ok(adapter) => adapter,
        Err(e) => {
            return vec![bad(
                Status::Fail,
                CHECK,
                format!("the IKE adapter's config: {e}"),
                "fix it (`wimark-ha ike-initiate --config` reads it at every takeover)",
            )]
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
        return vec![bad(
            Status::Warn,
            CHECK,
            format!(
                "{}: [connection] leaves MOBIKE on (strongSwan's default): a planned switchover lets the old master move the APs' SAs to its own address, off the VIP",
                path.display()
            ),
            "set mobike = false in [connection], and mobike = no on the AP connections of the IKE daemon's swanctl.conf",
        )];
    }
    vec![ok(
        CHECK,
        format!(
            "AP table synced with {}, IKE hook: the strongSwan adapter ({}), MOBIKE off",
            recovery.sync_peer,
            path.display()
        ),
    )]
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
}
