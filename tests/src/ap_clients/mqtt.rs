//! mosquitto brokers on both servers and a publisher and subscriber per
//! AP: when each subscriber received again.

use super::*;

/// The MQTT topic the lab's brokers carry.
pub const MQTT_TOPIC: &str = "wimark/lab";
/// AP n's publisher publishes to `AP_TOPIC/n`.
pub const AP_TOPIC: &str = "wimark/ap";

/// A process in a lab namespace, killed on drop.
pub(super) struct LabProcess(Option<Child>);

impl LabProcess {
    pub(super) fn kill(&mut self) {
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
/// timed (arrivals are per client, AP by AP); optionally per AP a
/// publisher too (`mosquitto_pub -l` to the VIP, a message every 100 ms,
/// libmosquitto's reconnect), timed by a watcher on each server.
pub struct Mqtt {
    broker_a: LabProcess,
    publisher_a: LabProcess,
    /// A's watcher of the APs' publishers (goes with A).
    watcher_a: Option<LabProcess>,
    _broker_b: LabProcess,
    _publisher_b: LabProcess,
    _subscribers: Vec<LabProcess>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    /// Per client (AP by AP, then by keepalive), when its messages arrived.
    received: Arrivals,
    /// Where the AP publishers' `-d` logs are (`ap<n>-pub.log`).
    dir: PathBuf,
}

/// A mosquitto broker on port 1883 of `namespace` (its log
/// `dir/<name>.log`), accepting connections when this returns.
pub(super) fn start_broker(namespace: &str, dir: &Path, name: &str) -> Result<LabProcess> {
    if !Path::new("/usr/sbin/mosquitto").exists() {
        bail!("/usr/sbin/mosquitto is missing: the AP lab's MQTT needs mosquitto (cargo xtask prereqs)");
    }
    std::fs::create_dir_all(dir)?;
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        "listener 1883 0.0.0.0\nallow_anonymous true\npersistence false\nlog_dest stderr\n",
    )?;
    let broker = LabProcess(Some(
        Command::new("ip")
            .args(["netns", "exec", namespace, "mosquitto", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.log")))?)
            .spawn()
            .context("starting mosquitto")?,
    ));
    crate::daemon::wait_until(Duration::from_secs(5), "mosquitto listening", || {
        crate::lab::in_netns(namespace, || {
            std::net::TcpStream::connect(("127.0.0.1", 1883)).is_ok()
        })
        .unwrap_or(false)
    })?;
    Ok(broker)
}

impl Mqtt {
    /// One subscriber per AP, with keepalive `keepalive_s`.
    pub fn start(lab: &ApLab, dir: &Path, keepalive_s: u16) -> Result<Self> {
        Self::start_clients(lab, dir, &[keepalive_s])
    }

    /// Per AP, one subscriber per keepalive in `keepalives_s` (each its own
    /// TCP connection to the VIP).
    pub fn start_clients(lab: &ApLab, dir: &Path, keepalives_s: &[u16]) -> Result<Self> {
        Self::start_with(lab, dir, keepalives_s, false)
    }

    /// Per AP, the subscribers of [`Mqtt::start_clients`] and a publisher
    /// (keepalive 60 s): AP n's clients are in a row, its subscribers in
    /// the order of `keepalives_s`, then its publisher.
    pub fn start_with_publishers(lab: &ApLab, dir: &Path, keepalives_s: &[u16]) -> Result<Self> {
        Self::start_with(lab, dir, keepalives_s, true)
    }

    fn start_with(
        lab: &ApLab,
        dir: &Path,
        keepalives_s: &[u16],
        ap_publishers: bool,
    ) -> Result<Self> {
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
        let broker_a = start_broker(&lab.a, dir, "broker-a")?;
        let broker_b = start_broker(&lab.b, dir, "broker-b")?;
        let in_ns = |namespace: &str, program: &str| {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", namespace, program]);
            command
        };
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
        let per_ap = keepalives_s.len() + usize::from(ap_publishers);
        let received: Arrivals = (0..lab.aps.len() * per_ap)
            .map(|_| Arc::new(Mutex::new(Vec::new())))
            .collect();
        let mut ap_publishers_running = Vec::new();
        let mut watchers = Vec::new();
        let mut reader_threads = Vec::new();
        if ap_publishers {
            for (i, ap) in lab.aps.iter().enumerate() {
                // -d: what it sent and when it reconnected, for a trial
                // that wants to know why a publisher was slow.
                let log = std::fs::File::create(dir.join(format!("ap{}-pub.log", i + 1)))?;
                ap_publishers_running.push(LabProcess(Some(
                    in_ns(ap, "mosquitto_pub")
                        .args(["-h", VIP, "-t", &format!("{AP_TOPIC}/{}", i + 1), "-l", "-d"])
                        .args(["-i", &format!("ap{}-pub", i + 1), "-k", "60"])
                        .stdin(Stdio::piped())
                        .stdout(log.try_clone()?)
                        .stderr(log)
                        .spawn()
                        .context("starting an AP's mosquitto_pub")?,
                )));
            }
            // Each server's broker hears the APs' publishers while it holds
            // the VIP: a watcher there times each AP's messages.
            for server in [&lab.a, &lab.b] {
                let mut child = in_ns(server, "mosquitto_sub")
                    .args(["-h", "127.0.0.1", "-t", &format!("{AP_TOPIC}/+"), "-v"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting a server's mosquitto_sub")?;
                let stdout = child.stdout.take().context("mosquitto_sub stdout")?;
                let received = received.clone();
                reader_threads.push(thread::spawn(move || {
                    for line in std::io::BufReader::new(stdout).lines() {
                        let Ok(line) = line else { break };
                        let ap = line
                            .strip_prefix(AP_TOPIC)
                            .and_then(|rest| rest.strip_prefix('/'))
                            .and_then(|rest| rest.split(' ').next())
                            .and_then(|n| n.parse::<usize>().ok());
                        let Some(slot) = ap.and_then(|n| received.get(n * per_ap - 1)) else {
                            continue;
                        };
                        if let Ok(mut seen) = slot.lock() {
                            seen.push(Instant::now());
                        }
                    }
                }));
                watchers.push(LabProcess(Some(child)));
            }
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut inputs: Vec<std::process::ChildStdin> = [&mut publisher_a, &mut publisher_b]
            .into_iter()
            .chain(ap_publishers_running.iter_mut())
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
        threads.extend(reader_threads);
        // watchers: [A's, B's] or none.
        let watcher_b = watchers.pop();
        let watcher_a = watchers.pop();
        let mut subscribers = ap_publishers_running;
        subscribers.extend(watcher_b);
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
            let seen = received[i * per_ap + k].clone();
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
            dir: dir.to_path_buf(),
            broker_a,
            publisher_a,
            watcher_a,
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

    /// AP `n`'s publisher's debug log (its CONNECTs, PUBLISHes, errors),
    /// with [`Mqtt::start_with_publishers`].
    pub fn ap_publisher_log(&self, n: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("ap{n}-pub.log"))).unwrap_or_default()
    }

    /// How many clients there are (APs times keepalives).
    pub fn clients(&self) -> usize {
        self.received.len()
    }

    /// The lost server's broker, publisher and watcher go with it.
    pub fn lose_a(&mut self) {
        self.broker_a.kill();
        self.publisher_a.kill();
        if let Some(watcher) = &mut self.watcher_a {
            watcher.kill();
        }
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
