//! `[ap_recovery]`: the AP table sync, the IKE hook and its budget, the MQTT
//! kick, the IKE daemon's socket and config, the XDP AP table's size —
//! checked here so that a takeover never finds a recovery it cannot run.

use super::*;
use super::{context::Context, raw::*};

impl Context<'_> {
    pub(super) fn ap_recovery(
        &self,
        raw: RawApRecovery,
        instances: &[InstanceConfig],
        peer: Option<&PeerConfig>,
    ) -> Result<ApRecoveryConfig, ConfigError> {
        let instance = match &raw.instance {
            Some(name) => {
                if !instances.iter().any(|i| &i.name == name.get_ref()) {
                    return Err(self.error(
                        name.span(),
                        "ap_recovery.instance",
                        &format!("no [[instance]] is named `{}`", name.get_ref()),
                    ));
                }
                name.get_ref().clone()
            }
            None => instances
                .first()
                .map(|i| i.name.clone())
                .unwrap_or_default(),
        };
        let key = raw.sync_key_file.get_ref();
        if !key.starts_with('/') {
            return Err(self.error(
                raw.sync_key_file.span(),
                "ap_recovery.sync_key_file",
                "must be an absolute path (a file of at least 16 random bytes, mode 0600, the same on both nodes)",
            ));
        }
        let sync_peer = match (&raw.sync_peer, peer) {
            (Some(text), _) => text.get_ref().parse().map_err(|_| {
                self.error(
                    text.span(),
                    "ap_recovery.sync_peer",
                    &format!("`{}` is not an IP address", text.get_ref()),
                )
            })?,
            (None, Some(peer)) => peer.address,
            (None, None) => {
                return Err(self.error(
                    raw.sync_key_file.span(),
                    "ap_recovery.sync_peer",
                    "the AP table needs a peer to go to: set sync_peer, or [peer] address",
                ))
            }
        };
        let sync_port = match &raw.sync_port {
            Some(port) => self.integer(port, "ap_recovery.sync_port", 1, 65535)? as u16,
            None => DEFAULT_AP_SYNC_PORT,
        };
        let ike_hook = match raw.ike_hook {
            None => None,
            Some(argv) if argv.get_ref().first().is_some_and(|p| p.starts_with('/')) => {
                Some(argv.into_inner())
            }
            Some(argv) => {
                return Err(self.error(
                    argv.span(),
                    "ap_recovery.ike_hook",
                    "must be an argv whose program is an absolute path, e.g. [\"/usr/sbin/wimark-ha\", \"ike-initiate\", \"--config\", \"/etc/wimark-ha/ike-initiate.toml\"]",
                ))
            }
        };
        let ike_hook_timeout = self.positive_duration_or(
            &raw.ike_hook_timeout,
            "ap_recovery.ike_hook_timeout",
            Duration::from_secs(10),
            "the hook would be killed before it starts",
        )?;
        let ike_daemon_config = match raw.ike_daemon_config {
            None => Vec::new(),
            Some(paths) => {
                if let Some(bad) = paths.get_ref().iter().find(|p| !p.starts_with('/')) {
                    return Err(self.error(
                        paths.span(),
                        "ap_recovery.ike_daemon_config",
                        &format!("`{bad}` is not an absolute path (the IKE daemon's swanctl.conf, e.g. /usr/share/wimark/ipsec/swanctl.conf)"),
                    ));
                }
                paths.into_inner().into_iter().map(PathBuf::from).collect()
            }
        };
        let ike_vici = match raw.ike_vici {
            None => None,
            Some(text) => {
                let path = text.get_ref();
                let path = path.strip_prefix("unix://").unwrap_or(path);
                if !path.starts_with('/') {
                    return Err(self.error(
                        text.span(),
                        "ap_recovery.ike_vici",
                        &format!("`{}` is not an absolute path (charon's vici socket, e.g. /var/run/charon.vici)", text.get_ref()),
                    ));
                }
                Some(PathBuf::from(path))
            }
        };
        let max_aps = match &raw.max_aps {
            Some(aps) => self.integer(
                aps,
                "ap_recovery.max_aps",
                1,
                i64::from(wimark_ha_common::abi::AP_TABLE_MAX_APS),
            )? as u32,
            None => wimark_ha_common::abi::AP_TABLE_DEFAULT_APS,
        };
        let mqtt_kick_rate = match &raw.mqtt_kick_rate {
            Some(rate) => self.integer(
                rate,
                "ap_recovery.mqtt_kick_rate",
                1,
                i64::from(crate::recovery::mqtt::MAX_KICKS_PER_SECOND),
            )? as u32,
            None => crate::recovery::mqtt::DEFAULT_KICKS_PER_SECOND,
        };
        Ok(ApRecoveryConfig {
            instance,
            sync_key_file: PathBuf::from(key),
            sync_peer,
            sync_port,
            ike_hook,
            ike_hook_timeout,
            ike_daemon_config,
            mqtt_kick: raw.mqtt_kick.unwrap_or(true),
            mqtt_kick_rate,
            ike_vici,
            max_aps,
        })
    }
}
