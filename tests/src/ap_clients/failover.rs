//! Two daemons in front of the real AP clients: the lab of the AP tests
//! and `bench aps`.

use super::*;

/// Two daemons (A 200, B 100, 1 ms fast detection) in front of real AP
/// clients, the IKE responders on both servers; with `recovery`, both have
/// `[ap_recovery]` (the synced AP table, each node's charon read over vici
/// for the APs' identities, and `wimark-ha ike-initiate` as the IKE hook).
/// Ready when every AP's tunnel works through A and, with recovery, B
/// knows every AP's IKE_SA (port and identity).
/// Each AP's MQTT clients in [`ApFailover`].
#[derive(Clone, Debug)]
pub struct MqttClients {
    /// One subscriber per keepalive (s).
    pub keepalives_s: Vec<u16>,
    /// And a publisher (a message every 100 ms).
    pub publisher: bool,
    /// Instead: one idle connection per AP (keepalive `keepalives_s[0]`),
    /// many to a thread ([`FleetMqtt`]), for a lab of thousands.
    pub fleet: bool,
}

impl MqttClients {
    pub fn subscriber(keepalive_s: u16) -> Self {
        Self {
            keepalives_s: vec![keepalive_s],
            publisher: false,
            fleet: false,
        }
    }

    /// One idle connection per AP from [`FleetMqtt`].
    pub fn fleet(keepalive_s: u16) -> Self {
        Self {
            keepalives_s: vec![keepalive_s],
            publisher: false,
            fleet: true,
        }
    }

    /// Connections per AP.
    pub fn per_ap(&self) -> usize {
        self.keepalives_s.len() + usize::from(self.publisher)
    }
}

pub struct ApFailover {
    /// With MQTT clients: brokers on both servers, the clients per AP.
    pub mqtt: Option<Mqtt>,
    /// With [`MqttClients::fleet`]: brokers on both servers, a connection
    /// per AP.
    pub fleet_mqtt: Option<FleetMqtt>,
    pub daemon_a: crate::daemon::Daemon,
    pub daemon_b: crate::daemon::Daemon,
    pub aps: Vec<Charon>,
    pub charon_a: Charon,
    pub charon_b: Charon,
    pub lab: ApLab,
    _scratch: crate::Scratch,
}

impl ApFailover {
    pub fn new(
        count: u8,
        ike: ApIke,
        recovery: bool,
        mqtt_keepalive: Option<u16>,
        tag: &str,
    ) -> Result<Self> {
        Self::in_lab(
            ApLab::new(count)?,
            ike,
            recovery,
            mqtt_keepalive.map(MqttClients::subscriber),
            tag,
        )
    }

    /// The same in `lab` (e.g. [`ApLab::behind_nat`]).
    pub fn in_lab(
        lab: ApLab,
        ike: ApIke,
        recovery: bool,
        mqtt_clients: Option<MqttClients>,
        tag: &str,
    ) -> Result<Self> {
        Self::in_lab_with(lab, ike, recovery, mqtt_clients, tag, "")
    }

    /// The same with `recovery_extra` (TOML lines, e.g. `mqtt_kick_rate =
    /// 1000`) added to both daemons' `[ap_recovery]`.
    pub fn in_lab_with(
        lab: ApLab,
        ike: ApIke,
        recovery: bool,
        mqtt_clients: Option<MqttClients>,
        tag: &str,
        recovery_extra: &str,
    ) -> Result<Self> {
        use crate::daemon::{config, wait_until, Daemon, FAST};
        let count = lab.aps.len();
        let scratch = crate::Scratch::new(tag);
        let (charon_a, charon_b) = lab.responders(&scratch.0)?;
        let key = write_sync_key(&scratch.0)?;
        let body = |peer: &str, charon: &Charon, name: &str| -> Result<String> {
            if !recovery {
                return Ok(FAST.to_string());
            }
            let adapter = scratch.0.join(format!("ike-initiate-{name}.toml"));
            std::fs::write(&adapter, adapter_toml(&charon.vici_uri()))?;
            // Sized as an operator would: the table holds the fleet.
            let max_aps = count.max(wimark_ha_common::abi::AP_TABLE_DEFAULT_APS as usize);
            Ok(format!(
                "{FAST}\n\n[ap_recovery]\nsync_key_file = \"{}\"\nsync_peer = \"{peer}\"\nike_hook = [\"{}\", \"ike-initiate\", \"--config\", \"{}\"]\nike_hook_timeout = \"{hook_timeout}s\"\nike_daemon_config = [\"{}\"]\nike_vici = \"{}\"\nmax_aps = {max_aps}\n{recovery_extra}",
                key.display(),
                crate::wimark_ha_bin().display(),
                adapter.display(),
                charon.swanctl_conf().display(),
                charon.vici_uri(),
                // The lab's charon set up 85-139 SAs/s at 1 000 APs and
                // 19-38 /s at 5 000 (2 vCPUs for both servers and every
                // AP): the adapter needs N / rate and a margin — and at
                // least what `doctor` asks for the table's size (its
                // per-AP timeout + max_aps at 100 a second).
                hook_timeout = (10 + count / 20).max(7 + max_aps / 100),
            ))
        };
        let body_a = body("10.77.0.2", &charon_a, "a")?;
        let body_b = body("10.77.0.1", &charon_b, "b")?;
        let daemon_a = Daemon::start(&lab.a, &format!("{tag}-a"), |s| config(s, 200, &body_a))?;
        wait_until(Duration::from_secs(5), "A MASTER", || {
            daemon_a.state() == Some(State::Master)
        })
        .with_context(|| daemon_a.log())?;
        let daemon_b = Daemon::start(&lab.b, &format!("{tag}-b"), |s| config(s, 100, &body_b))?;
        wait_until(Duration::from_secs(5), "B BACKUP", || {
            daemon_b.state() == Some(State::Backup)
        })
        .with_context(|| daemon_b.log())?;
        let aps = lab.start_aps(&scratch.0, ike)?;
        let mqtt_dir = scratch.0.join("mqtt");
        let fleet_mqtt = match &mqtt_clients {
            Some(clients) if clients.fleet => {
                Some(FleetMqtt::start(&lab, &mqtt_dir, clients.keepalives_s[0])?)
            }
            _ => None,
        };
        let mqtt = match &mqtt_clients {
            Some(clients) if clients.fleet => None,
            Some(clients) if clients.publisher => Some(Mqtt::start_with_publishers(
                &lab,
                &mqtt_dir,
                &clients.keepalives_s,
            )?),
            Some(clients) => Some(Mqtt::start_clients(
                &lab,
                &mqtt_dir,
                &clients.keepalives_s,
            )?),
            None => None,
        };
        if recovery {
            // Every AP's IKE_SA, as A's charon lists it (two APs behind one
            // NAT address are one address and two IKE_SAs).
            // A's listing of 5 000 IKE_SAs takes seconds on this machine
            // and is paced (ike_sas::READ_PAUSE_FACTOR): a minute or more
            // between listings there.
            let limit = Duration::from_secs(20) + Duration::from_millis(30) * count as u32;
            wait_until(limit, "B knows every AP's IKE_SA", || {
                daemon_b
                    .status()
                    .ok()
                    .and_then(|s| s.ap_sync)
                    .is_some_and(|sync| sync.synced_ike_peers == count)
            })
            .with_context(|| {
                format!(
                    "B: {:?}\nA: {:?}",
                    daemon_b.status().map(|s| s.ap_sync),
                    daemon_a.status().map(|s| s.ap_sync)
                )
            })?;
        }
        // The sync carries at most MAX_MQTT_PER_AP connections per AP
        // address (every AP behind the NAT shares one).
        let addresses = if lab.nat.is_some() { 1 } else { count };
        let connections = count * mqtt_clients.as_ref().map_or(0, MqttClients::per_ap);
        let synced_connections = addresses
            * (connections / addresses).min(wimark_ha::recovery::mqtt::MAX_MQTT_PER_AP);
        if (mqtt.is_some() || fleet_mqtt.is_some()) && recovery {
            // Every AP's MQTT connections reach B with the next change or
            // refresh.
            // The sync sends a tenth of a large table per tick.
            wait_until(
                Duration::from_secs(15) + Duration::from_millis(3) * count as u32,
                "B knows every AP's MQTT connection",
                || {
                    daemon_b
                        .status()
                        .ok()
                        .and_then(|s| s.ap_sync)
                        .is_some_and(|sync| sync.synced_mqtt_connections == synced_connections)
                },
            )
            .with_context(|| format!("{:?}", daemon_b.status().map(|s| s.ap_sync)))?;
        }
        Ok(Self {
            mqtt,
            fleet_mqtt,
            daemon_a,
            daemon_b,
            aps,
            charon_a,
            charon_b,
            lab,
            _scratch: scratch,
        })
    }

    /// Node loss of A: its link cut, its daemon and IKE daemon killed at
    /// once.
    pub fn lose_a(&mut self) -> Result<Loss> {
        let started = Instant::now();
        self.daemon_a.signal(libc::SIGKILL);
        crate::lab::ip(&["-n", &self.lab.a, "link", "set", "eth1", "down"])?;
        let cut = Instant::now();
        self.charon_a.kill();
        if let Some(mqtt) = &mut self.mqtt {
            mqtt.lose_a();
        }
        if let Some(mqtt) = &mut self.fleet_mqtt {
            mqtt.lose_a();
        }
        Ok(Loss { started, cut })
    }
}

impl ApFailover {
    /// A planned switchover: A hands mastership to B (`wimark-ha
    /// switchover`); returns when it was asked. Everything stays up.
    pub fn switch_over(&self) -> Result<Instant> {
        let asked = Instant::now();
        let response = wimark_ha::control::request(
            &self.daemon_a.socket,
            &wimark_ha::control::Request::Switchover {
                instance: None,
                back: false,
            },
        )?;
        if !response.ok {
            bail!("switchover refused: {response:?}");
        }
        crate::daemon::wait_until(Duration::from_secs(5), "B MASTER", || {
            self.daemon_b.state() == Some(State::Master)
        })?;
        Ok(asked)
    }
}
