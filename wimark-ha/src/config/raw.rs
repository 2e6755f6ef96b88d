//! The config file as written: serde shapes with their spans, before any
//! rule is applied (`sections` turns them into the model).

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) daemon: RawDaemon,
    #[serde(default)]
    pub(super) instance: Vec<Spanned<RawInstance>>,
    pub(super) roles: Option<Spanned<RawRoles>>,
    #[serde(default)]
    pub(super) hooks: RawHooks,
    pub(super) notify: Option<RawNotify>,
    pub(super) fencing: Option<RawFencing>,
    pub(super) peer: Option<RawPeer>,
    pub(super) metrics: Option<RawMetrics>,
    pub(super) ap_recovery: Option<RawApRecovery>,
    #[serde(default)]
    pub(super) sync_group: Vec<Spanned<RawSyncGroup>>,
    pub(super) witness: Option<Spanned<RawWitness>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWitness {
    pub(super) endpoints: Spanned<Vec<Spanned<String>>>,
    pub(super) key: Spanned<String>,
    pub(super) lease_ttl: Option<Spanned<String>>,
    pub(super) node: Option<Spanned<String>>,
    pub(super) user: Option<Spanned<String>>,
    pub(super) password: Option<Spanned<String>>,
    pub(super) tls: Option<Spanned<RawWitnessTls>>,
    pub(super) on_isolation: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWitnessTls {
    pub(super) ca: Spanned<String>,
    pub(super) cert: Option<Spanned<String>>,
    pub(super) key: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSyncGroup {
    pub(super) name: Spanned<String>,
    pub(super) instances: Spanned<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApRecovery {
    pub(super) instance: Option<Spanned<String>>,
    pub(super) sync_key_file: Spanned<String>,
    pub(super) sync_peer: Option<Spanned<String>>,
    pub(super) sync_port: Option<Spanned<i64>>,
    pub(super) ike_hook: Option<Spanned<Vec<String>>>,
    pub(super) ike_hook_timeout: Option<Spanned<String>>,
    pub(super) ike_daemon_config: Option<Spanned<Vec<String>>>,
    pub(super) mqtt_kick: Option<bool>,
    pub(super) mqtt_kick_rate: Option<Spanned<i64>>,
    pub(super) ike_vici: Option<Spanned<String>>,
    pub(super) max_aps: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFencing {
    pub(super) command: Spanned<Vec<String>>,
    pub(super) timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeartbeat {
    pub(super) interface: Spanned<String>,
    pub(super) peer: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeer {
    pub(super) address: Spanned<String>,
    pub(super) ssh_user: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoles {
    pub(super) instance: Option<Spanned<String>>,
    pub(super) sync_group: Option<Spanned<String>>,
    pub(super) docker_socket: Option<String>,
    pub(super) master: Spanned<RawSelector>,
    pub(super) backup: Spanned<RawSelector>,
    pub(super) stop_timeout: Option<Spanned<String>>,
    pub(super) demote_delay: Option<Spanned<String>>,
    pub(super) start_timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) master_process: Vec<Spanned<RawProcess>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProcess {
    pub(super) run: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSelector {
    pub(super) compose_project: Option<String>,
    pub(super) labels: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHooks {
    #[serde(default)]
    pub(super) before_promote: Vec<Spanned<RawHook>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHook {
    pub(super) remove: Option<String>,
    pub(super) run: Option<Vec<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) blocking: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    pub(super) script: Spanned<String>,
    pub(super) timeout: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    pub(super) control_socket: Option<Spanned<String>>,
    pub(super) state_dir: Option<Spanned<String>>,
    pub(super) restart_hold: Option<Spanned<String>>,
    pub(super) advert_senders: Option<Spanned<RawCountOrAuto>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInstance {
    pub(super) name: Spanned<String>,
    pub(super) interface: Spanned<String>,
    pub(super) vrid: Spanned<i64>,
    pub(super) priority: Spanned<i64>,
    pub(super) version: Option<Spanned<i64>>,
    pub(super) advert_interval: Option<Spanned<String>>,
    pub(super) auth_pass: Option<Spanned<String>>,
    pub(super) virtual_ips: Spanned<Vec<Spanned<String>>>,
    pub(super) preempt: Option<bool>,
    #[serde(default)]
    pub(super) unicast_peers: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) peers: Vec<Spanned<String>>,
    pub(super) fast_detect: Option<Spanned<RawFastDetect>>,
    pub(super) garp_master_repeat: Option<Spanned<i64>>,
    pub(super) garp_master_delay: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) heartbeat: Vec<Spanned<RawHeartbeat>>,
    #[serde(default)]
    pub(super) track: Vec<Spanned<RawTrack>>,
}

/// `[[instance.track]]`: exactly one of `interface`, `script`, `file`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrack {
    pub(super) name: Option<Spanned<String>>,
    pub(super) interface: Option<Spanned<String>>,
    pub(super) script: Option<Spanned<Vec<String>>>,
    pub(super) file: Option<Spanned<String>>,
    pub(super) weight: Option<Spanned<i64>>,
    pub(super) interval: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) rise: Option<Spanned<i64>>,
    pub(super) fall: Option<Spanned<i64>>,
    pub(super) init_fail: Option<bool>,
    pub(super) container: Option<Spanned<String>>,
    pub(super) container_label: Option<Spanned<String>>,
    pub(super) grace: Option<Spanned<String>>,
    pub(super) when: Option<Spanned<String>>,
    pub(super) process: Option<Spanned<String>>,
    pub(super) quorum: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFastDetect {
    pub(super) interval: Spanned<String>,
    pub(super) multiplier: Spanned<RawCountOrAuto>,
}

/// A whole number or `"auto"` (`fast_detect.multiplier`, `advert_senders`).
pub(super) enum RawCountOrAuto {
    Count(i64),
    Word(String),
}

impl<'de> Deserialize<'de> for RawCountOrAuto {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawCountOrAuto;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a whole number or \"auto\"")
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<RawCountOrAuto, E> {
                Ok(RawCountOrAuto::Count(n))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<RawCountOrAuto, E> {
                Ok(RawCountOrAuto::Count(n.min(i64::MAX as u64) as i64))
            }
            fn visit_str<E: serde::de::Error>(self, word: &str) -> Result<RawCountOrAuto, E> {
                Ok(RawCountOrAuto::Word(word.to_string()))
            }
        }
        d.deserialize_any(Visitor)
    }
}
