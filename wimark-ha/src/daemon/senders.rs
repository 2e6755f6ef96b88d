//! The fast advert stream's senders: one thread per CPU (`[daemon]
//! advert_senders`), each pinned to its CPU and SCHED_FIFO where permitted,
//! taking turns so that together they keep the fast interval. On a VM the
//! hypervisor takes one vCPU away for milliseconds at a time; a heartbeat
//! sent from one thread carries each such stall to the peer as silence,
//! turns on several CPUs leave only whole-VM stalls.
//!
//! A stream is the machine's standing order ([`Heartbeat::Send`]): its advert,
//! already encoded for every link, its interval and a lease; the senders stop
//! by themselves when the lease runs out (a hung engine goes silent, so the
//! backup takes over), and at once on [`SenderPool::stop`] — which returns
//! only when no sender can send the old advert again, since each sends
//! holding its own lock. The daemon's death ends every sender with it
//! (threads of one process).
//!
//! Owns: those threads, their CPUs and their turns. Must not: decide what is
//! sent or when a stream starts or stops (the state machine does).
//!
//! [`Heartbeat::Send`]: crate::vrrp::Heartbeat::Send

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Condvar, Mutex,
    },
    time::Duration,
};

use super::advert_socket::AdvertSocket;
use crate::{clock::monotonic_now_ns, config::AdvertSenders, vrrp::Timestamp};

/// At most this many senders with `advert_senders = "auto"`.
pub const MAX_AUTO_SENDERS: usize = 4;

/// One advert as it goes out on one link.
pub struct Message {
    pub socket: Arc<AdvertSocket>,
    pub destination: IpAddr,
    pub bytes: bytes::Bytes,
}

/// Adverts sent and sends failed by one instance's stream, shared with the
/// engine, which reports failures (the senders do not log from their
/// realtime loop).
#[derive(Debug, Default)]
pub struct StreamCounters {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    /// The errno of the latest failed send.
    pub last_errno: std::sync::atomic::AtomicI32,
    /// When the latest advert went out (monotonic ns; 0: none yet), for
    /// `status` as MASTER.
    pub last_sent_ns: AtomicU64,
    /// Gaps between two consecutive turns of a stream (any sender), as the
    /// senders measured them: what this node's own stalls did to its
    /// heartbeat, to set beside the silence a backup measured.
    pub turn_gaps: AtomicU64,
    /// Those longer than two intervals.
    pub late_turns: AtomicU64,
    /// The longest, in ns.
    pub longest_turn_gap_ns: AtomicU64,
}

impl StreamCounters {
    /// The silence of a stream whose lease ran out, from its last send
    /// (`last_sent`, 0: none) to its restart at `t`: a turn gap too.
    pub fn lease_gap(&self, last_sent: u64, t: u64, every: Duration) {
        if last_sent > 0 {
            self.turn(last_sent, t, every);
        }
    }

    /// One turn of a stream taken at `t`, the stream's previous turn (or
    /// its origin) at `previous`.
    fn turn(&self, previous: u64, t: u64, every: Duration) {
        if t <= previous {
            return;
        }
        let gap = t - previous;
        self.turn_gaps.fetch_add(1, Ordering::Relaxed);
        self.longest_turn_gap_ns.fetch_max(gap, Ordering::Relaxed);
        if gap > 2 * every.as_nanos() as u64 {
            self.late_turns.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One instance's fast stream.
pub struct Stream {
    pub messages: Vec<Message>,
    pub every: Duration,
    pub until: Timestamp,
    /// The advert at the stream's start (sent by the engine itself); the
    /// senders' turns follow it.
    pub origin: Timestamp,
    pub counters: Arc<StreamCounters>,
    /// The stream's latest turn (any sender; monotonic ns), from `origin`.
    pub last_turn_ns: AtomicU64,
}

/// One sender's share of a stream.
struct Turns {
    stream: Arc<Stream>,
    until: Timestamp,
    next: Timestamp,
    /// Between two turns of this sender: `every` times the senders.
    step: Duration,
}

struct Slot {
    turns: Mutex<BTreeMap<usize, Turns>>,
    wake: Condvar,
}

/// The sender threads. Dropping the pool leaves them idle until the process
/// exits (they hold nothing but their slot).
pub struct SenderPool {
    slots: Vec<Arc<Slot>>,
    cpus: Vec<usize>,
}

fn now() -> Timestamp {
    Timestamp(monotonic_now_ns())
}

impl SenderPool {
    pub fn start(count: AdvertSenders) -> std::io::Result<Self> {
        let allowed = allowed_cpus();
        let cpus: Vec<usize> = match count {
            AdvertSenders::Auto => allowed.iter().copied().take(MAX_AUTO_SENDERS).collect(),
            AdvertSenders::Count(n) => (0..n.max(1)).map(|k| allowed[k % allowed.len()]).collect(),
        };
        let mut slots = Vec::new();
        for (k, cpu) in cpus.iter().copied().enumerate() {
            let slot = Arc::new(Slot {
                turns: Mutex::new(BTreeMap::new()),
                wake: Condvar::new(),
            });
            let mine = slot.clone();
            std::thread::Builder::new()
                .name(format!("advert-sender-{k}"))
                .spawn(move || sender(mine, cpu))?;
            slots.push(slot);
        }
        if cpus.len() == 1 && allowed.len() == 1 {
            tracing::warn!(
                "one advert sender (one CPU available): a stall of that CPU delays every fast advert; the detection window must absorb it"
            );
        } else if cpus.len() == 1 {
            tracing::info!(
                cpu = cpus[0],
                "one advert sender (advert_senders = 1): a stall of its CPU delays every fast advert"
            );
        } else {
            tracing::info!(senders = cpus.len(), ?cpus, "fast advert senders, one per CPU");
        }
        Ok(Self { slots, cpus })
    }

    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// Starts `instance`'s stream (replacing any), its turns from `origin`.
    pub fn start_stream(&self, instance: usize, stream: Stream) {
        let n = self.slots.len() as u32;
        let stream = Arc::new(stream);
        for (k, slot) in self.slots.iter().enumerate() {
            // Sender k of n sends at origin + (1 + k + j n) * every: the
            // turns interleave, one interval apart.
            let first = stream.origin + stream.every * (1 + k as u32);
            let mut turns = lock(&slot.turns);
            turns.insert(
                instance,
                Turns {
                    stream: stream.clone(),
                    until: stream.until,
                    next: first,
                    step: stream.every * n,
                },
            );
            slot.wake.notify_one();
        }
    }

    /// Extends the lease of `instance`'s stream; false unless every sender
    /// still had it (a lease runs out sender by sender: renewing only the
    /// ones left would lose the others' turns for good, so the engine starts
    /// the stream again instead).
    pub fn renew(&self, instance: usize, until: Timestamp) -> bool {
        let mut everywhere = true;
        for slot in &self.slots {
            match lock(&slot.turns).get_mut(&instance) {
                Some(turns) => turns.until = until,
                None => everywhere = false,
            }
        }
        everywhere
    }

    /// Stops `instance`'s stream: when this returns no sender sends it again.
    pub fn stop(&self, instance: usize) {
        for slot in &self.slots {
            lock(&slot.turns).remove(&instance);
            slot.wake.notify_one();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A sender never panics holding its lock; if one did, its turns are
    // still plain data.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn sender(slot: Arc<Slot>, cpu: usize) {
    pin_and_prioritise(cpu);
    let mut turns = lock(&slot.turns);
    loop {
        let t = now();
        let mut next: Option<Timestamp> = None;
        turns.retain(|_, turn| t < turn.until);
        for turn in turns.values_mut() {
            if turn.next <= t {
                let counters = &turn.stream.counters;
                let previous = turn.stream.last_turn_ns.fetch_max(t.0, Ordering::Relaxed);
                counters.turn(previous, t.0, turn.stream.every);
                for message in &turn.stream.messages {
                    match message.socket.send(&message.bytes, message.destination) {
                        Ok(()) => {
                            counters.sent.fetch_add(1, Ordering::Relaxed);
                            counters.last_sent_ns.fetch_max(t.0, Ordering::Relaxed);
                        }
                        Err(e) => {
                            counters
                                .last_errno
                                .store(e.raw_os_error().unwrap_or(0), Ordering::Relaxed);
                            counters.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                // The next turn of this sender after now: a late one
                // (stalled) skips the turns it missed instead of bursting.
                let step = turn.step;
                turn.next = turn.next + step;
                if turn.next <= t {
                    let behind = t.saturating_since(turn.next).as_nanos() / step.as_nanos().max(1);
                    turn.next = turn.next + step * (behind as u32 + 1);
                }
            }
            next = Some(next.map_or(turn.next, |n| n.min(turn.next)));
        }
        turns = match next {
            None => slot.wake.wait(turns).unwrap_or_else(|e| e.into_inner()),
            Some(deadline) => {
                let timeout = deadline.saturating_since(now());
                slot.wake
                    .wait_timeout(turns, timeout)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
    }
}

/// The CPUs this process may run on (its affinity mask), at least CPU 0.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is valid; the syscall fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } == 0;
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        .filter(|cpu| ok && unsafe { libc::CPU_ISSET(*cpu, &set) })
        .collect();
    if cpus.is_empty() {
        vec![0]
    } else {
        cpus
    }
}

/// Pins the calling thread to `cpu`, SCHED_FIFO 50 where permitted (the
/// engine's priority); either refusal is logged, not fatal.
fn pin_and_prioritise(cpu: usize) {
    // SAFETY: plain syscalls on the calling thread with valid arguments.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::warn!(cpu, "advert sender not pinned: {}", std::io::Error::last_os_error());
        }
        let param = libc::sched_param { sched_priority: 50 };
        if libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) != 0 {
            tracing::debug!(cpu, "advert sender at normal priority: {}", std::io::Error::last_os_error());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_gaps_count_the_late_ones_and_keep_the_longest() {
        let counters = StreamCounters::default();
        let every = Duration::from_millis(1);
        let ms = |n: u64| n * 1_000_000;
        counters.turn(ms(0), ms(1), every);
        counters.turn(ms(1), ms(2), every);
        // A stall: the next turn 7 ms after the one before.
        counters.turn(ms(2), ms(9), every);
        // Exactly two intervals is not late.
        counters.turn(ms(9), ms(11), every);
        // Another sender already took a later turn: no gap.
        counters.turn(ms(11), ms(11), every);
        // A lease run out: 40 ms from the last send to the restart.
        counters.lease_gap(ms(11), ms(51), every);
        // No send before: nothing to measure.
        counters.lease_gap(0, ms(60), every);
        assert_eq!(counters.turn_gaps.load(Ordering::Relaxed), 5);
        assert_eq!(counters.late_turns.load(Ordering::Relaxed), 2);
        assert_eq!(counters.longest_turn_gap_ns.load(Ordering::Relaxed), ms(40));
    }
}
