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
    /// Set by [`TunnelProbes::arm`].
    armed: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
}

pub(super) const PROBE_PORT: u16 = 7;

/// Each AP's probe interval for a lab of `aps` (the resolution of
/// "back"): 10 ms up to 20 APs, then 0.5 ms per AP up to 1 000 (500 ms),
/// then 1 ms per AP beyond (4.5 s at 5 000) — at most ~2 000 probes a
/// second in all. The servers do ESP in userspace (kernel-libipsec), so
/// every probe into a stale tunnel lands in the new master's charon, on
/// the UDP socket its IKE exchanges use: at 10 000 probes a second (300
/// APs every 30 ms) that socket's queue overflowed while charon was busy
/// with the takeover's DH (UdpRcvbufErrors), and each IKE packet lost
/// cost its AP a 4 s retransmission. At 5 000 APs and 10 000 probes a
/// second only 1 120 of the first round were answered in 120 s. Once
/// back, an armed lab slows the AP down ([`TunnelProbes::arm`]).
pub fn probe_every(aps: usize) -> Duration {
    let per_ap = if aps <= 1000 {
        Duration::from_micros(500) * aps as u32
    } else {
        Duration::from_millis(1) * aps as u32 - Duration::from_millis(500)
    };
    Duration::from_millis(10).max(per_ap)
}

/// How often an AP probes once it is back after an armed cut, for a lab
/// of `aps`: every 2 s, or slower beyond 1 000 APs (at most ~500 a second
/// in all).
pub fn probe_when_back(aps: usize) -> Duration {
    Duration::from_secs(2).max(Duration::from_millis(2) * aps as u32)
}

impl TunnelProbes {
    pub fn start(lab: &ApLab) -> Result<Self> {
        use std::sync::{atomic::Ordering, Arc, Mutex};
        raise_file_limit();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let every = probe_every(lab.aps.len());
        let when_back = probe_when_back(lab.aps.len());
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
        let armed = Arc::new(Mutex::new(None));
        for (namespace, aps) in lab.by_namespace() {
            let seen: Vec<_> = aps.iter().map(|n| (*n, answers[n - 1].clone())).collect();
            let armed = armed.clone();
            threads.push(spawn_in_netns(namespace, stop.clone(), move |stop| {
                probe_namespace(&seen, every, when_back, &armed, &stop);
            })?);
        }
        Ok(Self {
            stop,
            threads,
            answers,
            every,
            armed,
        })
    }

    /// From now on an AP answered after `cut` (a loss's, see [`Loss`])
    /// probes only every [`probe_when_back`]: for the fleet, where only
    /// each AP's first answer after the loss is measured.
    pub fn arm(&self, cut: Instant) {
        if let Ok(mut armed) = self.armed.lock() {
            *armed = Some(cut);
        }
    }

    /// Waits until every AP of `aps` (1-based) has had an answer, or
    /// `limit`; per AP whether it had one.
    pub fn wait_answered(&self, aps: &[usize], limit: Duration) -> Vec<bool> {
        let started = Instant::now();
        let answered = || -> Vec<bool> {
            aps.iter()
                .map(|n| self.answers[n - 1].lock().is_ok_and(|s| !s.is_empty()))
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
/// inner address, sending to the servers' echo; all polled at once.
/// Each AP probes every `every`; once [`TunnelProbes::arm`] has set a cut,
/// an AP answered after the cut probes only every `when_back`
/// (what is measured is its first answer after the loss, and answered
/// probes cost userspace ESP on both sides: at 1 000 APs they slowed the
/// very exchanges being measured).
fn probe_namespace(
    aps: &[(usize, std::sync::Arc<std::sync::Mutex<Vec<Instant>>>)],
    every: Duration,
    when_back: Duration,
    armed: &std::sync::Mutex<Option<Instant>>,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::os::fd::AsRawFd as _;
    let mut sockets = Vec::new();
    for (n, seen) in aps {
        let Ok(socket) = std::net::UdpSocket::bind((ap_inner(*n).as_str(), 0)) else {
            return;
        };
        // Not connected: before its charon has installed the route into
        // the tunnel there is none, and a connect would fail for good.
        if socket.set_nonblocking(true).is_err() {
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
    // Spread the APs' first sends over the interval, as independent APs
    // would send.
    let started = Instant::now();
    let count = sockets.len().max(1) as u32;
    let mut next_due: Vec<Instant> = (0..sockets.len())
        .map(|i| started + every / count * i as u32)
        .collect();
    let mut last_answer: Vec<Option<Instant>> = vec![None; sockets.len()];
    let mut buffer = [0u8; 64];
    let mut last_cut = None;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let cut = armed.lock().ok().and_then(|a| *a);
        let now = Instant::now();
        if cut != last_cut {
            // Newly armed: every AP probes at the fast rate from now on
            // (spread over one interval), not after its slow wait.
            last_cut = cut;
            for (i, due) in next_due.iter_mut().enumerate() {
                *due = (*due).min(now + every / count * i as u32);
            }
        }
        let mut soonest = now + Duration::from_millis(5);
        for (i, (socket, _)) in sockets.iter().enumerate() {
            if next_due[i] <= now {
                let _ = socket.send_to(b"probe", (SERVER_INNER, PROBE_PORT));
                let back = matches!((cut, last_answer[i]), (Some(cut), Some(last)) if last > cut);
                let interval = if back { when_back } else { every };
                // No catch-up burst after a stall.
                next_due[i] = (next_due[i] + interval).max(now);
            }
            soonest = soonest.min(next_due[i]);
        }
        let wait_ms = soonest
            .saturating_duration_since(Instant::now())
            .as_millis()
            .clamp(1, 5) as i32;
        // SAFETY: `polled` is a valid array of pollfd for its length.
        let ready = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, wait_ms) };
        if ready <= 0 {
            continue;
        }
        let arrived = Instant::now();
        for (i, (entry, (socket, seen))) in polled.iter_mut().zip(&sockets).enumerate() {
            if entry.revents & libc::POLLIN == 0 {
                continue;
            }
            entry.revents = 0;
            while socket.recv(&mut buffer).is_ok() {
                if let Ok(mut seen) = seen.lock() {
                    seen.push(arrived);
                }
                last_answer[i] = Some(arrived);
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
