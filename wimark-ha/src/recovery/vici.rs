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
//! template has none) are set to the AP and the
//! connection is loaded as `wimark-ap-<address>[-<port>]`, initiated with a
//! timeout, then unloaded (the SA keeps what it needs), so thousands of APs
//! leave no config behind.
//!
//! Owns: the adapter's config and its vici conversation. Must not: retry
//! (one attempt per AP per takeover, bounded by `timeout`), or act on an
//! entry that is not an address.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{ApEntry, ApList, ApOutcome};
use crate::config::ConfigError;

/// `/etc/wimark-ha/ike-initiate.toml`, as documented in the guide.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    vici: Option<String>,
    child: String,
    timeout: Option<String>,
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
    /// Per AP: load, initiate and unload must finish within it.
    pub timeout: Duration,
    /// APs initiated at once (one vici connection each). A waiting
    /// `initiate` holds one of charon's worker threads (`charon.threads`,
    /// 16 by default): at 8 of 16, the IKE exchanges themselves starved
    /// and every initiate timed out; keep it at a quarter of the threads.
    pub concurrency: usize,
    /// swanctl.conf's `connections.<name>`, without `remote_addrs`,
    /// `remote_port` and `local_port` (the adapter's, per AP).
    pub connection: toml::Table,
}

const DEFAULT_VICI: &str = "/var/run/charon.vici";
/// A quarter of charon's default 16 worker threads (see `concurrency`).
const DEFAULT_CONCURRENCY: usize = 4;

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
            None => Duration::from_secs(3),
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
        let concurrency = raw.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if !(1..=64).contains(&concurrency) {
            return Err(error(
                "concurrency",
                format!("{concurrency}: must be 1..64"),
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
            concurrency,
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

#[derive(Debug, Deserialize)]
struct Answer {
    success: bool,
    #[serde(default)]
    errmsg: Option<String>,
}

#[derive(Serialize)]
struct Initiate<'a> {
    child: &'a str,
    ike: &'a str,
    /// ms; charon answers when the CHILD_SA is up or this passed.
    timeout: u64,
    /// The AP must not be refused by charon's half-open limits.
    #[serde(rename = "init-limits")]
    init_limits: bool,
}

#[derive(Serialize)]
struct Unload<'a> {
    name: &'a str,
}

fn outcome(entry: &ApEntry, started: Instant, result: Result<(), String>) -> ApOutcome {
    ApOutcome {
        address: entry.address.clone(),
        ok: result.is_ok(),
        took_ms: started.elapsed().as_secs_f64() * 1e3,
        error: result.err(),
    }
}

/// Connects to vici. charon's listen backlog is short: a connection
/// refused with EAGAIN is tried again until `deadline`.
async fn connect(path: &Path, deadline: Instant) -> Result<rsvici::Client, String> {
    loop {
        match rsvici::unix::connect(path).await {
            Ok(client) => return Ok(client),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => return Err(format!("vici {}: {e}", path.display())),
        }
    }
}

/// One AP over `client`: load its connection, initiate, unload.
async fn initiate_one(
    config: &IkeConfig,
    client: &mut rsvici::Client,
    entry: &ApEntry,
) -> ApOutcome {
    let started = Instant::now();
    let address = match entry.ip() {
        Ok(address) => address,
        Err(e) => return outcome(entry, started, Err(e)),
    };
    let attempt = async {
        let name = connection_name(&address, entry.ike_port);
        let mut connection = config.connection.clone();
        connection.insert(
            "remote_addrs".to_string(),
            toml::Value::Array(vec![toml::Value::String(address.to_string())]),
        );
        for (key, port) in ports_for(entry.ike_port) {
            connection.insert(key.to_string(), toml::Value::Integer(port.into()));
        }
        // charon sends INITIAL_CONTACT, which makes the AP drop its stale
        // SA, only to a known identity (never to %any): unless the
        // template names one, the AP's identity as the list gives it, else
        // its address (strongSwan's default identity for PSK peers — not
        // behind a NAT, where the AP's own is its private address).
        if let Some(toml::Value::Table(remote)) = connection.get_mut("remote") {
            let id = entry.ike_id.clone().unwrap_or_else(|| address.to_string());
            remote.entry("id").or_insert_with(|| toml::Value::String(id));
        }
        let mut message = toml::Table::new();
        message.insert(name.clone(), toml::Value::Table(connection));
        let loaded: Answer = client
            .request("load-conn", &message)
            .await
            .map_err(|e| format!("vici load-conn: {e}"))?;
        if !loaded.success {
            return Err(format!(
                "load-conn refused: {}",
                loaded.errmsg.unwrap_or_default()
            ));
        }
        let remaining = config.timeout.saturating_sub(started.elapsed());
        let initiated: Result<Answer, String> = client
            .request(
                "initiate",
                Initiate {
                    child: &config.child,
                    ike: &name,
                    timeout: remaining.as_millis().max(1) as u64,
                    init_limits: false,
                },
            )
            .await
            .map_err(|e| format!("vici initiate: {e}"));
        // Whatever happened, leave no per-AP config behind (an established
        // SA keeps a reference to what it needs).
        let _: Result<Answer, _> = client.request("unload-conn", Unload { name: &name }).await;
        let initiated = initiated?;
        if initiated.success {
            Ok(())
        } else {
            Err(format!(
                "initiate failed: {}",
                initiated
                    .errmsg
                    .unwrap_or_else(|| "no reason given".to_string())
            ))
        }
    };
    // charon bounds `initiate` itself; this bounds a socket that accepts
    // and never answers.
    let bound = config.timeout + Duration::from_millis(500);
    let result = match tokio::time::timeout(bound, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer from vici within {bound:?}")),
    };
    outcome(entry, started, result)
}

/// Every AP of `list` by `concurrency` workers, each with a vici
/// connection of its own (a vici connection carries one request at a
/// time); one outcome per entry, in the list's order.
pub async fn initiate_all(config: &IkeConfig, list: &ApList) -> Vec<ApOutcome> {
    let started = Instant::now();
    let deadline = started + config.timeout;
    // An IKE daemon that is down fails every AP the same way: say so once
    // each, at once, instead of waiting out a timeout per AP.
    let first = match connect(&config.vici, deadline).await {
        Ok(client) => client,
        Err(e) => {
            return list
                .aps
                .iter()
                .map(|entry| outcome(entry, started, Err(e.clone())))
                .collect()
        }
    };
    let queue = std::sync::Mutex::new(list.aps.iter().enumerate());
    let workers = config.concurrency.min(list.aps.len()).max(1);
    let mut first = Some(first);
    let results: Vec<Vec<(usize, ApOutcome)>> =
        futures_util::future::join_all((0..workers).map(|_| {
            let given = first.take();
            let queue = &queue;
            async move {
                let mut done = Vec::new();
                let mut client = match given {
                    Some(client) => Ok(client),
                    None => connect(&config.vici, deadline).await,
                };
                loop {
                    let next = queue.lock().ok().and_then(|mut q| q.next());
                    let Some((index, entry)) = next else { break };
                    let result = match &mut client {
                        Ok(client) => initiate_one(config, client, entry).await,
                        Err(e) => outcome(entry, Instant::now(), Err(e.clone())),
                    };
                    done.push((index, result));
                }
                done
            }
        }))
        .await;
    let mut outcomes: Vec<(usize, ApOutcome)> = results.into_iter().flatten().collect();
    outcomes.sort_by_key(|(index, _)| *index);
    outcomes.into_iter().map(|(_, outcome)| outcome).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(config.concurrency, DEFAULT_CONCURRENCY);
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
        let unknown = GOOD.replace("child =", "chlid = \"x\"\nchild =");
        let e = IkeConfig::parse(&unknown, Path::new("ike.toml")).expect_err("unknown key");
        assert!(e.to_string().starts_with("ike.toml:"), "{e}");
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
        let outcomes = initiate_all(&config, &list).await;
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(outcomes.len(), 2);
        for outcome in outcomes {
            assert!(!outcome.ok);
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
