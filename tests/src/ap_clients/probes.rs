//! UDP echo probes through every AP's tunnel: when each came back after a
//! loss, and the longest silence each saw.

use super::*;

/// UDP probes through the tunnels: each AP sends to the servers' inner
/// address every 10 ms and records when answers arrive; both servers echo.
pub struct TunnelProbes {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    /// Per AP, the arrival times of answers.
    answers: Arrivals,
}

pub(super) const PROBE_PORT: u16 = 7;
pub(super) const PROBE_EVERY: Duration = Duration::from_millis(10);

impl TunnelProbes {
    pub fn start(lab: &ApLab) -> Result<Self> {
        use std::sync::{atomic::Ordering, Arc, Mutex};
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut threads = Vec::new();
        for server in [&lab.a, &lab.b] {
            threads.push(spawn_in_netns(server, stop.clone(), |stop| {
                let Ok(socket) = std::net::UdpSocket::bind((SERVER_INNER, PROBE_PORT)) else {
                    return;
                };
                let _ = socket.set_read_timeout(Some(Duration::from_millis(50)));
                let mut buffer = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = socket.recv_from(&mut buffer) {
                        let _ = socket.send_to(&buffer[..n], from);
                    }
                }
            })?);
        }
        let mut answers = Vec::new();
        for (i, ap) in lab.aps.iter().enumerate() {
            let n = i as u8 + 1;
            let seen = Arc::new(Mutex::new(Vec::new()));
            answers.push(seen.clone());
            threads.push(spawn_in_netns(ap, stop.clone(), move |stop| {
                let Ok(socket) = std::net::UdpSocket::bind((ap_inner(n).as_str(), 0)) else {
                    return;
                };
                let _ = socket.connect((SERVER_INNER, PROBE_PORT));
                let _ = socket.set_read_timeout(Some(Duration::from_millis(1)));
                let mut next = Instant::now();
                let mut buffer = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if Instant::now() >= next {
                        let _ = socket.send(b"probe");
                        next += PROBE_EVERY;
                    }
                    if socket.recv(&mut buffer).is_ok() {
                        if let Ok(mut seen) = seen.lock() {
                            seen.push(Instant::now());
                        }
                    }
                }
            })?);
        }
        Ok(Self {
            stop,
            threads,
            answers,
        })
    }

    /// Per AP, the first answer that cannot have come through the lost
    /// server, timed from the loss (None: none yet).
    pub fn back_after(&self, loss: Loss) -> Vec<Option<Duration>> {
        back_after(&self.answers, loss)
    }

    /// Waits until every AP is back, or `limit` after the loss.
    pub fn wait_all_back(&self, loss: Loss, limit: Duration) -> Vec<Option<Duration>> {
        wait_all_back(&self.answers, loss, limit)
    }

    /// Per AP, the longest silence in the answers from `from` to `until`.
    pub fn longest_gap(&self, from: Instant, until: Instant) -> Vec<Duration> {
        longest_gap(&self.answers, from, until)
    }
}

/// When something arrived at each AP (a probe's answer, an MQTT message).
pub(super) type Arrivals = Vec<std::sync::Arc<std::sync::Mutex<Vec<Instant>>>>;

/// Per AP, the longest silence between arrivals from `from` to `until`
/// (a silence still running at `until` counts up to it): the outage a
/// planned switchover caused, where nothing is lost outright.
pub(super) fn longest_gap(arrivals: &Arrivals, from: Instant, until: Instant) -> Vec<Duration> {
    arrivals
        .iter()
        .map(|seen| {
            let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
            let mut last = from;
            let mut longest = Duration::ZERO;
            for t in seen.into_iter().filter(|t| *t > from && *t <= until) {
                longest = longest.max(t - last);
                last = t;
            }
            longest.max(until.saturating_duration_since(last))
        })
        .collect()
}

/// Per AP, the first arrival that cannot have come through the lost server
/// (after its cut was complete), timed from the loss's start.
pub(super) fn back_after(arrivals: &Arrivals, loss: Loss) -> Vec<Option<Duration>> {
    arrivals
        .iter()
        .map(|seen| {
            seen.lock()
                .ok()
                .and_then(|s| s.iter().find(|t| **t > loss.cut).map(|t| *t - loss.started))
        })
        .collect()
}

/// Waits until every AP has such an arrival, or `limit` after the loss.
pub(super) fn wait_all_back(
    arrivals: &Arrivals,
    loss: Loss,
    limit: Duration,
) -> Vec<Option<Duration>> {
    while loss.started.elapsed() < limit {
        let back = back_after(arrivals, loss);
        if back.iter().all(Option::is_some) {
            return back;
        }
        thread::sleep(Duration::from_millis(20));
    }
    back_after(arrivals, loss)
}

impl Drop for TunnelProbes {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// When a server was lost: from `started` (the first kill) to `cut` (its
/// link down: nothing can pass through it after).
#[derive(Clone, Copy, Debug)]
pub struct Loss {
    pub started: Instant,
    pub cut: Instant,
}
