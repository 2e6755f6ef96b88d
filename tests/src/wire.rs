//! A lossy wire between two lab namespaces, for kernels built without
//! `sch_netem` (this lab's is): a namespace in the middle copies every frame
//! between its two veth ends, dropping each with probability `loss` and
//! delaying it by a uniform 0..=`jitter` (so, as with netem, jitter reorders).

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Condvar, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{lab::in_netns, sockets::PacketSocket};

/// Loss and jitter of one wire.
#[derive(Clone, Copy, Debug)]
pub struct Impairment {
    /// 0.0..=1.0
    pub loss: f64,
    pub jitter: Duration,
}

/// Copies frames both ways until dropped.
pub struct LossyWire {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    pub forwarded: Arc<AtomicU64>,
    pub dropped: Arc<AtomicU64>,
    /// When each dropped frame was dropped (CLOCK_REALTIME ns, the clock of
    /// a capture's kernel stamps): a silence with few drops in it was a
    /// stall (of a sender, of this wire), not loss.
    pub drop_times: Arc<Mutex<Vec<u64>>>,
}

/// The wire's threads run SCHED_FIFO: netem does its work in the kernel,
/// and a wire that waits for the scheduler would add delays of its own (a
/// clean CI run saw one: a false takeover at 1 % loss, × 8).
fn realtime() {
    let param = libc::sched_param { sched_priority: 40 };
    // SAFETY: plain syscall on the calling thread; failure leaves it as is.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
}

/// A tiny xorshift: the tests need spread, not cryptography.
struct Random(u64);

impl Random {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

type Queue = Arc<(Mutex<BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>>>, Condvar)>;

impl LossyWire {
    /// Starts copying between `left` and `right`, both in `namespace`.
    pub fn start(namespace: &str, left: &str, right: &str, impairment: Impairment) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let drop_times: Arc<Mutex<Vec<u64>>> = Arc::default();
        let mut threads = Vec::new();
        for (seed, (from, to)) in [(left, right), (right, left)].into_iter().enumerate() {
            let (from, to) = (from.to_string(), to.to_string());
            let (input, output) = in_netns(
                namespace,
                move || -> Result<(PacketSocket, PacketSocket)> {
                    let input = PacketSocket::bind(&from, true)?;
                    input.set_receive_timeout(Duration::from_millis(20))?;
                    input.set_receive_buffer(4 << 20)?;
                    Ok((input, PacketSocket::bind(&to, false)?))
                },
            )??;
            let queue: Queue = Arc::new((Mutex::new(BinaryHeap::new()), Condvar::new()));
            // Receiver: decide each frame's fate.
            threads.push(thread::spawn({
                let (stop, dropped, queue) = (stop.clone(), dropped.clone(), queue.clone());
                let drop_times = drop_times.clone();
                let mut random =
                    Random(0x9e37_79b9_7f4a_7c15 ^ ((seed as u64 + 1) * 0x1234_5678_9abc));
                move || {
                    realtime();
                    let mut buffer = vec![0u8; 65536];
                    let mut sequence = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(Some(n)) = input.receive(&mut buffer) else {
                            continue;
                        };
                        if random.next_f64() < impairment.loss {
                            dropped.fetch_add(1, Ordering::Relaxed);
                            if let Ok(mut times) = drop_times.lock() {
                                times.push(crate::capture::realtime_ns());
                            }
                            continue;
                        }
                        let delay = impairment.jitter.mul_f64(random.next_f64());
                        sequence += 1;
                        let (heap, ready) = &*queue;
                        if let Ok(mut heap) = heap.lock() {
                            heap.push(Reverse((
                                Instant::now() + delay,
                                sequence,
                                buffer[..n.min(buffer.len())].to_vec(),
                            )));
                        }
                        ready.notify_one();
                    }
                    queue.1.notify_all();
                }
            }));
            // Sender: each frame when its time comes.
            threads.push(thread::spawn({
                let (stop, forwarded) = (stop.clone(), forwarded.clone());
                move || {
                    realtime();
                    let (heap, ready) = &*queue;
                    let Ok(mut guard) = heap.lock() else { return };
                    while !stop.load(Ordering::Relaxed) {
                        let now = Instant::now();
                        match guard.peek().map(|Reverse((due, _, _))| *due) {
                            Some(due) if due <= now => {
                                if let Some(Reverse((_, _, frame))) = guard.pop() {
                                    drop(guard);
                                    let _ = output.send(&frame);
                                    forwarded.fetch_add(1, Ordering::Relaxed);
                                    guard = match heap.lock() {
                                        Ok(g) => g,
                                        Err(_) => return,
                                    };
                                }
                            }
                            Some(due) => {
                                guard = match ready.wait_timeout(guard, due - now) {
                                    Ok((g, _)) => g,
                                    Err(_) => return,
                                };
                            }
                            None => {
                                guard = match ready.wait_timeout(guard, Duration::from_millis(20)) {
                                    Ok((g, _)) => g,
                                    Err(_) => return,
                                };
                            }
                        }
                    }
                }
            }));
        }
        Ok(Self {
            stop,
            threads,
            forwarded,
            dropped,
            drop_times,
        })
    }
}

impl Drop for LossyWire {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Servers A (10.77.0.1) and B (10.77.0.2) joined through a [`LossyWire`]
/// (a namespace copying frames between its two veth ends, `wa` and `wb`).
pub fn two_servers_on_a_lossy_wire(
    impairment: Impairment,
) -> Result<(crate::lab::Lab, String, String, LossyWire)> {
    crate::require_root("a lossy-wire lab");
    let mut lab = crate::lab::Lab::new()?;
    let a = lab.namespace("a", false)?;
    let b = lab.namespace("b", false)?;
    let w = lab.namespace("w", false)?;
    lab.veth((&a, "eth1"), (&w, "wa"))?;
    lab.veth((&b, "eth1"), (&w, "wb"))?;
    lab.address(&a, "eth1", "10.77.0.1/24")?;
    lab.address(&b, "eth1", "10.77.0.2/24")?;
    let wire = LossyWire::start(&w, "wa", "wb", impairment)?;
    Ok((lab, a, b, wire))
}
