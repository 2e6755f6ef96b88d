//! MQTT at fleet size: one connection per AP to the VIP from the AP's own
//! address, every AP of a namespace on one thread, with libmosquitto's
//! reconnect behaviour (`mosquitto_loop_forever` at its defaults: 1 s after
//! a connection is lost, then every 1 s until it connects; a PINGREQ after
//! `keepalive` of silence, the connection given up when the next
//! `keepalive` passes without an answer).
//!
//! An answer from the broker (CONNACK, PINGRESP) is an arrival; "MQTT
//! back" is the first after the loss, i.e. the CONNACK of the session
//! reconnected to the new master's broker. No messages are fanned out:
//! 5 000 subscribers fed every 100 ms would make the brokers, not the
//! failover, what is measured. What one AP costs the lab: one TCP
//! connection and a task (a few KiB) in its namespace's thread.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{atomic::AtomicBool, Arc, Mutex},
};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

/// libmosquitto's default `reconnect_delay` (and `reconnect_delay_max`).
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// Brokers on both servers and one idle MQTT connection per AP.
pub struct FleetMqtt {
    broker_a: LabProcess,
    _broker_b: LabProcess,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    /// Per AP, when its broker answered.
    received: Arrivals,
}

impl FleetMqtt {
    /// Every AP of `lab` connected to the VIP with keepalive `keepalive_s`.
    pub fn start(lab: &ApLab, dir: &Path, keepalive_s: u16) -> Result<Self> {
        raise_file_limit();
        let broker_a = start_broker(&lab.a, dir, "broker-a")?;
        let broker_b = start_broker(&lab.b, dir, "broker-b")?;
        let received: Arrivals = (0..lab.aps.len())
            .map(|_| Arc::new(Mutex::new(Vec::new())))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let vip: Ipv4Addr = VIP.parse()?;
        let keepalive = Duration::from_secs(keepalive_s.into());
        for (namespace, aps) in lab.by_namespace() {
            let mut clients = Vec::with_capacity(aps.len());
            for n in aps {
                let source: Ipv4Addr = lab.own[n - 1]
                    .parse()
                    .with_context(|| format!("AP {n}'s address"))?;
                clients.push((format!("fleet-ap{n}"), source, received[n - 1].clone()));
            }
            threads.push(spawn_in_netns(namespace, stop.clone(), move |stop| {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async move {
                    for (id, source, seen) in clients {
                        tokio::spawn(client(id, source, vip, keepalive, seen));
                    }
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                });
            })?);
        }
        let mqtt = Self {
            broker_a,
            _broker_b: broker_b,
            stop,
            threads,
            received,
        };
        let limit = Duration::from_secs(10) + Duration::from_millis(10) * lab.aps.len() as u32;
        crate::daemon::wait_until(limit, "every AP's MQTT session up", || {
            mqtt.received
                .iter()
                .all(|seen| seen.lock().is_ok_and(|s| !s.is_empty()))
        })?;
        Ok(mqtt)
    }

    /// The lost server's broker goes with it.
    pub fn lose_a(&mut self) {
        self.broker_a.kill();
    }

    /// Per AP, the first answer after the cut, timed from the loss.
    pub fn back_after(&self, loss: Loss) -> Vec<Option<Duration>> {
        back_after(&self.received, loss)
    }

    /// Waits until every AP's session is back, or `limit` after the loss.
    pub fn wait_all_back(&self, loss: Loss, limit: Duration) -> Vec<Option<Duration>> {
        wait_all_back(&self.received, loss, limit)
    }
}

impl Drop for FleetMqtt {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One AP's client, for ever: a session, and 1 s after it ends the next.
async fn client(
    id: String,
    source: Ipv4Addr,
    vip: Ipv4Addr,
    keepalive: Duration,
    seen: Arc<Mutex<Vec<Instant>>>,
) {
    loop {
        let _ = session(&id, source, vip, keepalive, &seen).await;
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

/// One MQTT session until the connection fails, is closed or goes
/// unanswered for a keepalive after a PINGREQ.
async fn session(
    id: &str,
    source: Ipv4Addr,
    vip: Ipv4Addr,
    keepalive: Duration,
    seen: &Mutex<Vec<Instant>>,
) -> std::io::Result<()> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    let mut stream = socket.connect(SocketAddr::from((vip, 1883))).await?;
    stream
        .write_all(&connect_packet(id, keepalive.as_secs() as u16))
        .await?;
    let mut buffer = [0u8; 64];
    let mut ping_outstanding = false;
    loop {
        match tokio::time::timeout(keepalive, stream.read(&mut buffer)).await {
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(n)) => {
                // CONNACK with a non-zero return code: refused.
                if buffer[0] == 0x20 && n >= 4 && buffer[3] != 0 {
                    return Err(std::io::Error::other("CONNACK refused"));
                }
                ping_outstanding = false;
                if let Ok(mut seen) = seen.lock() {
                    seen.push(Instant::now());
                }
            }
            Ok(Err(e)) => return Err(e),
            Err(_) if ping_outstanding => {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            Err(_) => {
                stream.write_all(&[0xC0, 0x00]).await?;
                ping_outstanding = true;
            }
        }
    }
}

/// MQTT 3.1.1 CONNECT: clean session, no will, no credentials.
fn connect_packet(id: &str, keepalive_s: u16) -> Vec<u8> {
    let mut variable = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02];
    variable.extend_from_slice(&keepalive_s.to_be_bytes());
    variable.extend_from_slice(&(id.len() as u16).to_be_bytes());
    variable.extend_from_slice(id.as_bytes());
    let mut packet = vec![0x10];
    // Remaining length, MQTT's variable-length integer.
    let mut length = variable.len();
    loop {
        let mut byte = (length % 128) as u8;
        length /= 128;
        if length > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if length == 0 {
            break;
        }
    }
    packet.extend(variable);
    packet
}
