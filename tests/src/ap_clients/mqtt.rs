//! mosquitto brokers on both servers and a publisher and subscriber per
//! AP: when each subscriber received again.

use super::*;

/// The MQTT topic the lab's brokers carry.
pub const MQTT_TOPIC: &str = "wimark/lab";

/// A process in a lab namespace, killed on drop.
pub(super) struct LabProcess(Option<Child>);

impl LabProcess {
    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// MQTT as the controller runs it: a mosquitto broker on each server, a
/// publisher on each feeding it a message every 100 ms, and per AP one
/// `mosquitto_sub` to the VIP per keepalive asked for, whose messages are
/// timed (arrivals are per client, AP by AP).
pub struct Mqtt {
    broker_a: LabProcess,
    publisher_a: LabProcess,
    _broker_b: LabProcess,
    _publisher_b: LabProcess,
    _subscribers: Vec<LabProcess>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    /// Per client (AP by AP, then by keepalive), when its messages arrived.
    received: Arrivals,
}

impl Mqtt {
    /// One subscriber per AP, with keepalive `keepalive_s`.
    pub fn start(lab: &ApLab, dir: &Path, keepalive_s: u16) -> Result<Self> {
        Self::start_clients(lab, dir, &[keepalive_s])
    }

    /// Per AP, one subscriber per keepalive in `keepalives_s` (each its own
    /// TCP connection to the VIP).
    pub fn start_clients(lab: &ApLab, dir: &Path, keepalives_s: &[u16]) -> Result<Self> {
        use std::{
            io::{BufRead as _, Write as _},
            sync::{atomic::Ordering, Arc, Mutex},
        };
        for binary in [
            "/usr/sbin/mosquitto",
            "/usr/bin/mosquitto_sub",
            "/usr/bin/mosquitto_pub",
        ] {
            if !Path::new(binary).exists() {
                bail!("{binary} is missing: the AP lab's MQTT needs mosquitto and mosquitto-clients (cargo xtask prereqs)");
            }
        }
        std::fs::create_dir_all(dir)?;
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            "listener 1883 0.0.0.0\nallow_anonymous true\npersistence false\nlog_dest stderr\n",
        )?;
        let in_ns = |namespace: &str, program: &str| {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", namespace, program]);
            command
        };
        let broker = |namespace: &str, name: &str| -> Result<LabProcess> {
            Ok(LabProcess(Some(
                in_ns(namespace, "mosquitto")
                    .arg("-c")
                    .arg(&conf)
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(dir.join(format!("{name}.log")))?)
                    .spawn()
                    .context("starting mosquitto")?,
            )))
        };
        let broker_a = broker(&lab.a, "broker-a")?;
        let broker_b = broker(&lab.b, "broker-b")?;
        // The brokers listen before anyone connects.
        for server in [&lab.a, &lab.b] {
            crate::daemon::wait_until(Duration::from_secs(5), "mosquitto listening", || {
                crate::lab::in_netns(server, || {
                    std::net::TcpStream::connect(("127.0.0.1", 1883)).is_ok()
                })
                .unwrap_or(false)
            })?;
        }
        let publisher = |namespace: &str| -> Result<LabProcess> {
            Ok(LabProcess(Some(
                in_ns(namespace, "mosquitto_pub")
                    .args(["-h", "127.0.0.1", "-t", MQTT_TOPIC, "-l"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting mosquitto_pub")?,
            )))
        };
        let mut publisher_a = publisher(&lab.a)?;
        let mut publisher_b = publisher(&lab.b)?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut inputs: Vec<std::process::ChildStdin> = [&mut publisher_a, &mut publisher_b]
            .into_iter()
            .filter_map(|p| p.0.as_mut().and_then(|c| c.stdin.take()))
            .collect();
        threads.push(thread::spawn({
            let stop = stop.clone();
            move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    for input in &mut inputs {
                        let _ = writeln!(input, "{n}");
                        let _ = input.flush();
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }));
        let mut subscribers = Vec::new();
        let mut received = Vec::new();
        let clients = lab.aps.iter().enumerate().flat_map(|(i, ap)| {
            keepalives_s
                .iter()
                .enumerate()
                .map(move |(k, keepalive)| (i, ap, k, *keepalive))
        });
        for (i, ap, k, keepalive_s) in clients {
            let mut child = in_ns(ap, "mosquitto_sub")
                .args(["-h", VIP, "-t", MQTT_TOPIC, "-k", &keepalive_s.to_string()])
                .args(["-i", &format!("ap{}-{k}", i + 1)])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("starting mosquitto_sub")?;
            let stdout = child.stdout.take().context("mosquitto_sub stdout")?;
            let seen = Arc::new(Mutex::new(Vec::new()));
            received.push(seen.clone());
            threads.push(thread::spawn(move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    if line.is_err() {
                        break;
                    }
                    if let Ok(mut seen) = seen.lock() {
                        seen.push(Instant::now());
                    }
                }
            }));
            subscribers.push(LabProcess(Some(child)));
        }
        let mqtt = Self {
            broker_a,
            publisher_a,
            _broker_b: broker_b,
            _publisher_b: publisher_b,
            _subscribers: subscribers,
            stop,
            threads,
            received,
        };
        crate::daemon::wait_until(Duration::from_secs(10), "every AP receiving MQTT", || {
            let now = Instant::now();
            mqtt.back_after(Loss {
                started: now - Duration::from_millis(500),
                cut: now - Duration::from_millis(500),
            })
            .iter()
            .all(Option::is_some)
        })?;
        Ok(mqtt)
    }

    /// How many clients there are (APs times keepalives).
    pub fn clients(&self) -> usize {
        self.received.len()
    }

    /// The lost server's broker and publisher go with it.
    pub fn lose_a(&mut self) {
        self.broker_a.kill();
        self.publisher_a.kill();
    }

    /// Per AP, the first message after the cut, timed from the loss.
    pub fn back_after(&self, loss: Loss) -> Vec<Option<Duration>> {
        back_after(&self.received, loss)
    }

    /// Waits until every AP receives again, or `limit` after the loss.
    pub fn wait_all_back(&self, loss: Loss, limit: Duration) -> Vec<Option<Duration>> {
        wait_all_back(&self.received, loss, limit)
    }

    /// Per AP, the longest silence in the messages from `from` to `until`.
    pub fn longest_gap(&self, from: Instant, until: Instant) -> Vec<Duration> {
        longest_gap(&self.received, from, until)
    }
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // The subscribers' readers end when their processes are killed
        // (fields drop after this), so only the feeder is joined here.
        if let Some(feeder) = self.threads.drain(..1).next() {
            let _ = feeder.join();
        }
    }
}
