//! UDP echo probes through every AP's tunnel: when each came back after a
//! loss, and the longest silence each saw.

use super::*;

/// UDP probes through the tunnels: each AP sends to the servers' inner
/// address every [`probe_every`] and records when answers arrive; both
/// servers echo. One thread per namespace (its APs' sockets polled
/// together), so a fleet of thousands costs a few threads.
pub struct TunnelProbes {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    /// Per AP, the arrival times of answers.
    answers: Arrivals,
    /// How often each AP probes: the resolution of "back".
    pub every: Duration,
}

pub(super) const PROBE_PORT: u16 = 7;

/// Each AP's probe interval for a lab of `aps`: 10 ms up to 10 APs, then
/// slower so that the lab sends at most ~1 000 probes a second in all:
/// each one is encrypted and decrypted by userspace ESP on both sides and
/// shares charon's UDP socket with the IKE exchanges being measured (at
/// 5 000 a second, 300 APs' recovery slowed and 60 initiations timed out).
pub fn probe_every(aps: usize) -> Duration {
    Duration::from_millis(10).max(Duration::from_millis(1) * aps as u32)
}

impl TunnelProbes {
    pub fn start(lab: &ApLab) -> Result<Self> {
        use std::sync::{atomic::Ordering, Arc, Mutex};
        raise_file_limit();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let every = probe_every(lab.aps.len());
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
        let answers: Arrivals = (0..lab.aps.len())
            .map(|_| Arc::new(Mutex::new(Vec::new())))
            .collect();
        for (namespace, aps) in lab.by_namespace() {
            let seen: Vec<_> = aps.iter().map(|n| (*n, answers[n - 1].clone())).collect();
            threads.push(spawn_in_netns(namespace, stop.clone(), move |stop| {
                probe_namespace(&seen, every, &stop);
            })?);
        }
        Ok(Self {
            stop,
            threads,
            answers,
            every,
        })
    }

    /// Waits until every AP has had an answer, or `limit`; per AP whether
    /// it had one.
    pub fn wait_all_answered(&self, limit: Duration) -> Vec<bool> {
        let started = Instant::now();
        let answered = || -> Vec<bool> {
            self.answers
                .iter()
                .map(|seen| seen.lock().is_ok_and(|s| !s.is_empty()))
                .collect()
        };
        while started.elapsed() < limit {
            if answered().iter().all(|a| *a) {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        answered()
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

/// One namespace's APs `(n, their answers)`: a socket each, bound to its
/// inner address and connected to the servers' echo; all polled at once.
fn probe_namespace(
    aps: &[(usize, std::sync::Arc<std::sync::Mutex<Vec<Instant>>>)],
    every: Duration,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::os::fd::AsRawFd as _;
    let mut sockets = Vec::new();
    for (n, seen) in aps {
        let Ok(socket) = std::net::UdpSocket::bind((ap_inner(*n).as_str(), 0)) else {
            return;
        };
        if socket.connect((SERVER_INNER, PROBE_PORT)).is_err() || socket.set_nonblocking(true).is_err() {
            return;
        }
        sockets.push((socket, seen.clone()));
    }
    let mut polled: Vec<libc::pollfd> = sockets
        .iter()
        .map(|(socket, _)| libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // Spread the APs' sends over the interval, as independent APs would.
    let count = sockets.len().max(1) as u32;
    let mut next_send = Instant::now();
    let mut turn = 0usize;
    let mut buffer = [0u8; 64];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let now = Instant::now();
        if now.saturating_duration_since(next_send) > every {
            // Behind by a whole round (a stalled thread): no catch-up burst.
            next_send = now;
        }
        while now >= next_send && !sockets.is_empty() {
            let _ = sockets[turn % sockets.len()].0.send(b"probe");
            turn += 1;
            next_send += every / count;
        }
        let wait_ms = next_send
            .saturating_duration_since(Instant::now())
            .as_millis()
            .clamp(1, 5) as i32;
        // SAFETY: `polled` is a valid array of pollfd for its length.
        let ready = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, wait_ms) };
        if ready <= 0 {
            continue;
        }
        let arrived = Instant::now();
        for (entry, (socket, seen)) in polled.iter_mut().zip(&sockets) {
            if entry.revents & libc::POLLIN == 0 {
                continue;
            }
            entry.revents = 0;
            while socket.recv(&mut buffer).is_ok() {
                if let Ok(mut seen) = seen.lock() {
                    seen.push(arrived);
                }
            }
        }
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
