//! The ready IKE adapter for strongSwan (`wimark-ha ike-initiate`): the new
//! master initiates an IKE SA to each AP of the list over charon's vici
//! socket. Its INITIAL_CONTACT makes the AP's charon destroy the stale
//! IKE_SA it still holds for the controller, and the CHILD_SA is up tens of
//! milliseconds after the takeover instead of after the AP's DPD schedule
//! (166 s) or never (strongSwan's defaults).
//!
//! The connection to initiate is the operator's, as TOML in the shape of
//! swanctl.conf's `connections.<name>` (vici's own `load-conn` message);
//! per AP, `remote_addrs` (and, for NAT-T, `remote_port` and `local_port`,
//! and `remote.id` — the list's `ike_id`, else the address — when the
//! template has none) are set to the AP and the connection is loaded as
//! `wimark-ap-<address>[-<port>]`, initiated without waiting, and unloaded
//! once the AP's initiation has ended (the SA keeps what it needs), so
//! thousands of APs leave no config behind. `initiate.rs` holds the vici
//! conversation, `inflight.rs` how each AP's initiation ends.
//!
//! Owns: the adapter's config, the per-AP connection's name and ports.
//! Must not: retry (one attempt per AP per takeover, bounded by
//! `timeout`), or act on an entry that is not an address.

mod inflight;
mod initiate;
mod report;

pub use initiate::initiate_all;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::config::ConfigError;

/// `/etc/wimark-ha/ike-initiate.toml`, as documented in the guide.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    vici: Option<String>,
    child: String,
    timeout: Option<String>,
    in_flight: Option<usize>,
    /// Before event-driven initiation: APs at a time, each holding one of
    /// charon's threads. Read and ignored (a note says so).
    concurrency: Option<usize>,
    connection: toml::Table,
}

/// The adapter's validated config.
#[derive(Clone, Debug)]
pub struct IkeConfig {
    /// charon's vici socket (a path, or `unix://` + path).
    pub vici: PathBuf,
    /// The CHILD_SA of `connection` to initiate.
    pub child: String,
    /// Per AP: from its start to its CHILD_SA up.
    pub timeout: Duration,
    /// APs whose initiation may be under way at once (started, not yet
    /// ended). No request waits in charon, so this bounds charon's
    /// half-open IKE_SAs and queued jobs, not its threads.
    pub in_flight: usize,
    /// What the config says that is no longer used (printed on stderr).
    pub notes: Vec<String>,
    /// swanctl.conf's `connections.<name>`, without `remote_addrs`,
    /// `remote_port` and `local_port` (the adapter's, per AP).
    pub connection: toml::Table,
}

const DEFAULT_VICI: &str = "/var/run/charon.vici";
/// Per AP unless the config says otherwise: long enough to see charon's
/// first retransmission answered (strongSwan's `retransmit_timeout` is
/// 4 s), so that one packet lost on the way is not reported as an AP that
/// failed while its tunnel comes up a second later (the CI fleet of 300
/// APs saw exactly that with 3 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(6);
/// Initiations under way at once unless the config says otherwise (see
/// docs/benchmarks.md, "the adapter's window", for the curve it is set on).
pub const DEFAULT_IN_FLIGHT: usize = 64;
/// The most initiations under way at once the config accepts.
pub const MAX_IN_FLIGHT: usize = 4096;

impl IkeConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: 0,
            key: "file".to_string(),
            message: format!("cannot read it: {e}"),
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = crate::config::parse_toml(text, file)?;
        let error = |key: &str, message: String| ConfigError {
            file: file.to_path_buf(),
            line: line_of_key(text, key),
            key: key.to_string(),
            message,
        };
        let timeout = match &raw.timeout {
            None => DEFAULT_TIMEOUT,
            Some(text) => humantime::parse_duration(text)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    error(
                        "timeout",
                        format!("`{text}` is not a positive duration (e.g. 3s, 500ms)"),
                    )
                })?,
        };
        let in_flight = raw.in_flight.unwrap_or(DEFAULT_IN_FLIGHT);
        if !(1..=MAX_IN_FLIGHT).contains(&in_flight) {
            return Err(error(
                "in_flight",
                format!("{in_flight}: must be 1..{MAX_IN_FLIGHT}"),
            ));
        }
        let mut notes = Vec::new();
        if let Some(concurrency) = raw.concurrency {
            notes.push(format!(
                "{}:{}: `concurrency = {concurrency}` is no longer used (initiations no longer hold charon's threads); `in_flight` ({in_flight}) bounds the initiations under way",
                file.display(),
                line_of_key(text, "concurrency")
            ));
        }
        let children = raw
            .connection
            .get("children")
            .and_then(toml::Value::as_table);
        if !children.is_some_and(|c| c.contains_key(&raw.child)) {
            return Err(error(
                "child",
                format!(
                    "`{}` is not one of [connection.children.*]: the CHILD_SA to initiate must be defined there",
                    raw.child
                ),
            ));
        }
        for key in ["remote_addrs", "remote_port", "local_port"] {
            if raw.connection.contains_key(key) {
                return Err(error(
                    key,
                    "is set per AP by the adapter; remove it from [connection]".to_string(),
                ));
            }
        }
        let vici = raw.vici.unwrap_or_else(|| DEFAULT_VICI.to_string());
        let vici = PathBuf::from(vici.strip_prefix("unix://").unwrap_or(&vici));
        Ok(Self {
            vici,
            child: raw.child,
            timeout,
            in_flight,
            notes,
            connection: raw.connection,
        })
    }
}

/// The first line that sets `key`, for errors found after deserialising.
fn line_of_key(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(0, |i| i + 1)
}

/// charon's NAT-T port: where a NAT-T peer's IKE and ESP arrive, behind
/// the non-ESP marker (RFC 3948).
const NAT_T_PORT: u16 = 4500;

/// The ports an AP's connection is loaded with, from the AP's IKE port as
/// the controller saw it. An AP that spoke IKE from another port than 500
/// (4500, or what a NAT mapped it to) is answered there, and *from* 4500:
/// a NAT's mapping was made by the AP's packets to VIP:4500 and forwards
/// only what comes back from VIP:4500. Left to itself, charon sends
/// IKE_SA_INIT from port 500 even to a remote port of 4500, and the NAT
/// drops it (issue 28).
fn ports_for(ike_port: Option<u16>) -> Vec<(&'static str, u16)> {
    match ike_port.filter(|p| *p != 500) {
        Some(port) => vec![("remote_port", port), ("local_port", NAT_T_PORT)],
        None => Vec::new(),
    }
}

/// The name the AP's connection is loaded under: one per address and IKE
/// port, so that two APs behind one NAT address are two connections.
fn connection_name(address: &std::net::IpAddr, ike_port: Option<u16>) -> String {
    let address = address.to_string().replace([':', '.'], "-");
    match ike_port {
        Some(port) => format!("wimark-ap-{address}-{port}"),
        None => format!("wimark-ap-{address}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::recovery::{ApEntry, ApList, ApResult};

    const GOOD: &str = r#"
vici = "unix:///run/charon.vici"
child = "tunnel"
timeout = "2s"

[connection]
local_addrs = ["10.10.10.3"]
version = 2
encap = true
proposals = ["aes128-sha256-modp2048"]
[connection.local]
auth = "psk"
id = "controller"
[connection.remote]
auth = "psk"
[connection.children.tunnel]
local_ts = ["10.99.0.1/32"]
esp_proposals = ["aes128-sha256"]
"#;

    #[test]
    fn a_documented_config_loads() {
        let config = IkeConfig::parse(GOOD, Path::new("ike.toml")).expect("valid");
        assert_eq!(config.vici, Path::new("/run/charon.vici"));
        assert_eq!(config.child, "tunnel");
        assert_eq!(config.timeout, Duration::from_secs(2));
        assert_eq!(config.in_flight, DEFAULT_IN_FLIGHT);
        assert!(config.notes.is_empty());
    }

    #[test]
    fn bad_configs_name_file_line_and_key() {
        let missing_child = GOOD.replace("child = \"tunnel\"", "child = \"other\"");
        let e = IkeConfig::parse(&missing_child, Path::new("ike.toml")).expect_err("bad child");
        assert_eq!((e.line, e.key.as_str()), (3, "child"), "{e}");
        let remote = GOOD.replace("version = 2", "version = 2\nremote_addrs = [\"1.2.3.4\"]");
        let e = IkeConfig::parse(&remote, Path::new("ike.toml")).expect_err("remote_addrs");
        assert_eq!(e.key, "remote_addrs", "{e}");
        let timeout = GOOD.replace("\"2s\"", "\"soon\"");
        let e = IkeConfig::parse(&timeout, Path::new("ike.toml")).expect_err("timeout");
        assert_eq!((e.line, e.key.as_str()), (4, "timeout"), "{e}");
        let window = GOOD.replace("timeout = \"2s\"", "timeout = \"2s\"\nin_flight = 0");
        let e = IkeConfig::parse(&window, Path::new("ike.toml")).expect_err("in_flight 0");
        assert_eq!((e.line, e.key.as_str()), (5, "in_flight"), "{e}");
        let unknown = GOOD.replace("child =", "chlid = \"x\"\nchild =");
        let e = IkeConfig::parse(&unknown, Path::new("ike.toml")).expect_err("unknown key");
        assert!(e.to_string().starts_with("ike.toml:"), "{e}");
    }

    #[test]
    fn an_old_concurrency_key_still_loads_and_is_said_to_be_unused() {
        let old = GOOD.replace("timeout = \"2s\"", "timeout = \"2s\"\nconcurrency = 4");
        let config = IkeConfig::parse(&old, Path::new("ike.toml")).expect("still valid");
        assert_eq!(config.in_flight, DEFAULT_IN_FLIGHT);
        assert_eq!(config.notes.len(), 1, "{:?}", config.notes);
        assert!(config.notes[0].starts_with("ike.toml:5:"), "{:?}", config.notes);
    }

    #[test]
    fn a_nat_t_peer_is_initiated_from_the_nat_t_port() {
        assert_eq!(
            ports_for(Some(40462)),
            [("remote_port", 40462), ("local_port", 4500)]
        );
        assert_eq!(
            ports_for(Some(4500)),
            [("remote_port", 4500), ("local_port", 4500)]
        );
        assert!(ports_for(Some(500)).is_empty());
        assert!(ports_for(None).is_empty());
        let local = GOOD.replace("version = 2", "version = 2\nlocal_port = 500");
        let e = IkeConfig::parse(&local, Path::new("ike.toml")).expect_err("local_port");
        assert_eq!(e.key, "local_port", "{e}");
    }

    #[test]
    fn connection_names_are_vici_safe() {
        assert_eq!(
            connection_name(&"10.77.0.50".parse().expect("ip"), None),
            "wimark-ap-10-77-0-50"
        );
        assert_eq!(
            connection_name(&"fd00::5".parse().expect("ip"), Some(500)),
            "wimark-ap-fd00--5-500"
        );
        // Two APs behind one NAT address: two connections.
        let nat: std::net::IpAddr = "10.77.0.200".parse().expect("ip");
        assert_ne!(
            connection_name(&nat, Some(41000)),
            connection_name(&nat, Some(47000))
        );
    }

    #[tokio::test]
    async fn an_ike_daemon_that_is_down_fails_every_ap_at_once() {
        let mut config = IkeConfig::parse(GOOD, Path::new("ike.toml")).expect("valid");
        config.vici = PathBuf::from("/nonexistent/charon.vici");
        let list = ApList {
            aps: vec![
                ApEntry {
                    address: "10.0.0.1".to_string(),
                    ike_port: None,
                    ike_id: None,
                },
                ApEntry {
                    address: "10.0.0.2".to_string(),
                    ike_port: Some(4500),
                    ike_id: None,
                },
            ],
            ..ApList::default()
        };
        let started = Instant::now();
        let outcomes = initiate_all(&config, &list, None).await;
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(outcomes.len(), 2);
        for outcome in outcomes {
            assert!(!outcome.ok);
            assert_eq!(outcome.result, Some(ApResult::Failed));
            assert!(
                outcome
                    .error
                    .as_deref()
                    .is_some_and(|e| e.contains("/nonexistent/charon.vici")),
                "{outcome:?}"
            );
        }
    }
}
