//! A process tracker: keepalived's `track_process`, from the kernel's
//! process events (the netlink process connector), not a `/proc` poll.
//!
//! Owns: the connector socket, the decoding of its events (typed errors),
//! the census of matching processes (exec, fork of a matching process,
//! rename, exit; threads are not processes), one `/proc` reading at the
//! start and after the kernel dropped events, and the quorum's verdict
//! through the same grace as a container (`Spell`). Must not: weigh the
//! verdict (the tracker does).

use std::{
    collections::BTreeSet,
    os::fd::{AsRawFd, RawFd},
    time::Instant,
};

use netlink_sys::{protocols::NETLINK_CONNECTOR, Socket, SocketAddr};

use super::{container::Spell, Observation};
use crate::config::ProcessTrack;

// linux/connector.h and linux/cn_proc.h, as the kernel lays them out.
const NLMSG_HEADER: usize = 16;
const CN_MSG_HEADER: usize = 20;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const NLMSG_OVERRUN: u16 = 4;
/// `proc_event`: what (4), cpu (4), timestamp (8), then its data.
const EVENT_DATA: usize = 16;

/// What decoding a connector datagram can refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("shorter than its headers ({0} bytes)")]
    Length(usize),
    #[error("netlink length {0} does not fit the datagram")]
    NetlinkLength(u32),
    #[error("not the process connector (idx {idx}, val {val})")]
    Connector { idx: u32, val: u32 },
    #[error("event {what:#x} shorter than its data ({len} bytes)")]
    EventLength { what: u32, len: usize },
}

/// One process event, as far as a census needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcEvent {
    Fork {
        parent_tgid: i32,
        child_pid: i32,
        child_tgid: i32,
    },
    Exec {
        pid: i32,
        tgid: i32,
    },
    Comm {
        pid: i32,
        tgid: i32,
        comm: String,
    },
    Exit {
        pid: i32,
        tgid: i32,
    },
    /// The kernel's answer to our subscription, or an event we ignore.
    Other,
    /// The kernel dropped events (our receive queue overran): read again.
    Lost,
}

fn i32_at(bytes: &[u8], at: usize) -> i32 {
    i32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Every event of one datagram (netlink may carry several messages).
pub fn decode(datagram: &[u8]) -> Result<Vec<ProcEvent>, DecodeError> {
    let mut events = Vec::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        if rest.len() < NLMSG_HEADER {
            return Err(DecodeError::Length(rest.len()));
        }
        let length = u32_at(rest, 0);
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        if (length as usize) < NLMSG_HEADER || length as usize > rest.len() {
            return Err(DecodeError::NetlinkLength(length));
        }
        let message = &rest[..length as usize];
        // NLMSG_ALIGN: 4-byte steps.
        rest = &rest[(length as usize).next_multiple_of(4).min(rest.len())..];
        match kind {
            NLMSG_OVERRUN => {
                events.push(ProcEvent::Lost);
                continue;
            }
            NLMSG_ERROR => {
                events.push(ProcEvent::Other);
                continue;
            }
            NLMSG_DONE => {}
            _ => continue,
        }
        events.push(decode_cn(&message[NLMSG_HEADER..])?);
    }
    Ok(events)
}

fn decode_cn(cn: &[u8]) -> Result<ProcEvent, DecodeError> {
    if cn.len() < CN_MSG_HEADER + EVENT_DATA {
        return Err(DecodeError::Length(cn.len()));
    }
    let (idx, val) = (u32_at(cn, 0), u32_at(cn, 4));
    if (idx, val) != (libc::CN_IDX_PROC, libc::CN_VAL_PROC) {
        return Err(DecodeError::Connector { idx, val });
    }
    let event = &cn[CN_MSG_HEADER..];
    let what = u32_at(event, 0);
    let data = &event[EVENT_DATA..];
    let need = |len: usize| {
        if data.len() < len {
            Err(DecodeError::EventLength {
                what,
                len: data.len(),
            })
        } else {
            Ok(())
        }
    };
    Ok(match what {
        libc::PROC_EVENT_FORK => {
            need(16)?;
            ProcEvent::Fork {
                parent_tgid: i32_at(data, 4),
                child_pid: i32_at(data, 8),
                child_tgid: i32_at(data, 12),
            }
        }
        libc::PROC_EVENT_EXEC => {
            need(8)?;
            ProcEvent::Exec {
                pid: i32_at(data, 0),
                tgid: i32_at(data, 4),
            }
        }
        libc::PROC_EVENT_COMM => {
            need(24)?;
            let comm = &data[8..24];
            let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
            ProcEvent::Comm {
                pid: i32_at(data, 0),
                tgid: i32_at(data, 4),
                comm: String::from_utf8_lossy(&comm[..end]).into_owned(),
            }
        }
        libc::PROC_EVENT_EXIT => {
            need(8)?;
            ProcEvent::Exit {
                pid: i32_at(data, 0),
                tgid: i32_at(data, 4),
            }
        }
        _ => ProcEvent::Other,
    })
}

/// The processes a tracker counts. Sans-IO: what the kernel said in, the
/// count out; `look` says what a process is called (from `/proc`).
#[derive(Debug, Clone)]
pub struct Census {
    name: String,
    pids: BTreeSet<i32>,
}

/// What a process is called: its `comm` and its argv\[0\].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Called {
    pub comm: String,
    pub argv0: String,
}

impl Census {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            pids: BTreeSet::new(),
        }
    }

    pub fn count(&self) -> usize {
        self.pids.len()
    }

    /// keepalived's process name: the kernel's `comm` (at most 15
    /// characters), or the program's file name.
    pub fn matches(&self, called: &Called) -> bool {
        let program = called.argv0.rsplit('/').next().unwrap_or_default();
        called.comm == self.name || program == self.name
    }

    /// Everything running now (the start, or events lost).
    pub fn reset(&mut self, running: impl IntoIterator<Item = (i32, Called)>) {
        self.pids = running
            .into_iter()
            .filter(|(_, called)| self.matches(called))
            .map(|(pid, _)| pid)
            .collect();
    }

    /// One event; `look` names a process when the census must know.
    /// Returns whether the count changed.
    pub fn event(&mut self, event: &ProcEvent, look: impl Fn(i32) -> Option<Called>) -> bool {
        let before = self.pids.len();
        match *event {
            // A matching process's child runs its image until it execs.
            ProcEvent::Fork {
                parent_tgid,
                child_pid,
                child_tgid,
            } if child_pid == child_tgid && self.pids.contains(&parent_tgid) => {
                self.pids.insert(child_tgid);
            }
            ProcEvent::Exec { pid, tgid } if pid == tgid => self.judge(tgid, look(tgid)),
            ProcEvent::Comm {
                pid,
                tgid,
                ref comm,
            } if pid == tgid => {
                let called = look(tgid).map(|c| Called {
                    comm: comm.clone(),
                    ..c
                });
                self.judge(tgid, called);
            }
            ProcEvent::Exit { pid, tgid } if pid == tgid => {
                self.pids.remove(&tgid);
            }
            _ => {}
        }
        self.pids.len() != before
    }

    fn judge(&mut self, tgid: i32, called: Option<Called>) {
        if called.is_some_and(|c| self.matches(&c)) {
            self.pids.insert(tgid);
        } else {
            self.pids.remove(&tgid);
        }
    }
}

/// What `/proc/PID` says the process is called; `None` once it is gone.
pub fn called(pid: i32) -> Option<Called> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    Some(Called {
        comm: comm.trim_end_matches('\n').to_string(),
        argv0: String::from_utf8_lossy(argv0).into_owned(),
    })
}

/// Every process now, read once (not a poll: the events keep it).
fn running() -> Vec<(i32, Called)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, called(pid)?)))
        .collect()
}

struct Connector(Socket);

impl AsRawFd for Connector {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// A connector socket subscribed to process events. The kernel sends them
/// only in the initial network namespace: a daemon in another (a lab's)
/// opens the socket there — in pid 1's namespace, or else in that of the
/// nearest ancestor that is elsewhere (`ip netns exec` was run from it) —
/// from a thread that enters it (CAP_SYS_ADMIN); the socket stays there,
/// the daemon does not.
fn subscribe() -> std::io::Result<Socket> {
    let refused = match subscribe_here() {
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => e,
        other => return other,
    };
    let mut tried = vec![format!("here: {refused}")];
    for path in std::iter::once("/proc/1/ns/net".to_string()).chain(ancestors_netns()) {
        let entered = std::thread::spawn({
            let path = path.clone();
            move || {
                let namespace = std::fs::File::open(&path)?;
                // On this short-lived thread only.
                nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                subscribe_here()
            }
        })
        .join()
        .map_err(|_| std::io::Error::other("the subscribing thread panicked"))?;
        match entered {
            Ok(socket) => return Ok(socket),
            Err(e) => tried.push(format!("{path}: {e}")),
        }
    }
    Err(std::io::Error::other(format!(
        "the kernel sends process events only in the initial network namespace, and this daemon could not subscribe there ({})",
        tried.join("; ")
    )))
}

/// The network namespaces of this process's ancestors that are not its
/// own, nearest first.
fn ancestors_netns() -> Vec<String> {
    let own = std::fs::read_link("/proc/self/ns/net").ok();
    let mut found = Vec::new();
    let mut pid = std::process::id() as i32;
    for _ in 0..64 {
        let Some(parent) = parent_of(pid) else { break };
        if parent <= 1 {
            break;
        }
        let path = format!("/proc/{parent}/ns/net");
        if let Ok(link) = std::fs::read_link(&path) {
            if Some(&link) != own.as_ref() && !found.iter().any(|(l, _)| l == &link) {
                found.push((link, path));
            }
        }
        pid = parent;
    }
    found.into_iter().map(|(_, path)| path).collect()
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn subscribe_here() -> std::io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_CONNECTOR)?;
    socket.bind(&SocketAddr::new(0, libc::CN_IDX_PROC))?;
    socket.set_non_blocking(true)?;
    // nlmsghdr + cn_msg + PROC_CN_MCAST_LISTEN.
    let mut message = Vec::with_capacity(NLMSG_HEADER + CN_MSG_HEADER + 4);
    let length = (NLMSG_HEADER + CN_MSG_HEADER + 4) as u32;
    message.extend_from_slice(&length.to_ne_bytes());
    message.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
    message.extend_from_slice(&0u16.to_ne_bytes()); // flags
    message.extend_from_slice(&0u32.to_ne_bytes()); // seq
    message.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel's
    message.extend_from_slice(&libc::CN_IDX_PROC.to_ne_bytes());
    message.extend_from_slice(&libc::CN_VAL_PROC.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes()); // seq
    message.extend_from_slice(&0u32.to_ne_bytes()); // ack
    message.extend_from_slice(&4u16.to_ne_bytes()); // len
    message.extend_from_slice(&0u16.to_ne_bytes()); // flags
    message.extend_from_slice(&(libc::PROC_CN_MCAST_LISTEN as u32).to_ne_bytes());
    socket.send(&message, 0)?;
    Ok(socket)
}

/// The count in words, and whether it holds the quorum.
fn evidence(census: &Census, track: &ProcessTrack) -> Option<String> {
    let count = census.count();
    (count < track.quorum as usize).then(|| {
        format!(
            "{count} process(es) `{}` running, quorum {}",
            track.name, track.quorum
        )
    })
}

/// Watches `track` forever. Without the kernel's events the tracker is
/// degraded (its health as last known) and says why; it is tried again
/// every few seconds.
pub async fn watch(
    instance: String,
    name: String,
    track: ProcessTrack,
    report: impl Fn(Observation),
) {
    let mut spell = Spell::new(track.grace);
    let mut census = Census::new(&track.name);
    let mut degraded = false;
    loop {
        let socket = match subscribe().and_then(|s| crate::monitor::register_readable(Connector(s)))
        {
            Ok(socket) => socket,
            Err(e) => {
                if !degraded {
                    tracing::error!(%instance, tracker = %name, "track process cannot hear the kernel's process events ({e}); its health holds as last known");
                    report(Observation::Degraded {
                        degraded: Some(format!("no process events: {e}")),
                    });
                    degraded = true;
                }
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                continue;
            }
        };
        if degraded {
            report(Observation::Degraded { degraded: None });
            degraded = false;
        }
        // Subscribed first, then read: nothing between the two is lost.
        census.reset(running());
        let now = Instant::now();
        spell.judge(now, true);
        spell.evidence(now, evidence(&census, &track));
        let mut buffer = vec![0u8; 8192];
        loop {
            if let Some(judgement) = spell.poll(Instant::now()) {
                tracing::info!(%instance, tracker = %name, healthy = judgement.healthy, "track process: {}", judgement.detail);
                report(Observation::Service {
                    healthy: judgement.healthy,
                    detail: judgement.detail,
                });
            }
            let deadline = spell.deadline();
            let ready = tokio::select! {
                ready = socket.readable() => ready,
                _ = async {
                    match deadline {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => std::future::pending().await,
                    }
                } => continue,
            };
            let Ok(mut ready) = ready else { break };
            let received = ready.try_io(|s| s.get_ref().0.recv(&mut &mut buffer[..], 0));
            let datagram = match received {
                Err(_would_block) => continue,
                Ok(Ok(n)) => &buffer[..n],
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    // Events dropped: read everything again.
                    census.reset(running());
                    spell.evidence(Instant::now(), evidence(&census, &track));
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::error!(%instance, tracker = %name, "track process: reading process events failed ({e}); subscribing again");
                    break;
                }
            };
            let events = match decode(datagram) {
                Ok(events) => events,
                Err(e) => {
                    tracing::debug!(%instance, tracker = %name, "track process: a datagram refused ({e})");
                    continue;
                }
            };
            let mut changed = false;
            for event in &events {
                if *event == ProcEvent::Lost {
                    census.reset(running());
                    changed = true;
                } else {
                    changed |= census.event(event, called);
                }
            }
            if changed {
                spell.evidence(Instant::now(), evidence(&census, &track));
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn called(comm: &str, argv0: &str) -> Option<Called> {
        Some(Called {
            comm: comm.into(),
            argv0: argv0.into(),
        })
    }

    /// A datagram as the kernel sends it: nlmsghdr, cn_msg, proc_event.
    fn datagram(what: u32, data: &[u8]) -> Vec<u8> {
        let length = (NLMSG_HEADER + CN_MSG_HEADER + EVENT_DATA + data.len()) as u32;
        let mut d = Vec::new();
        d.extend_from_slice(&length.to_ne_bytes());
        d.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        d.extend_from_slice(&[0; 10]);
        d.extend_from_slice(&libc::CN_IDX_PROC.to_ne_bytes());
        d.extend_from_slice(&libc::CN_VAL_PROC.to_ne_bytes());
        d.extend_from_slice(&[0; 8]);
        d.extend_from_slice(&((EVENT_DATA + data.len()) as u16).to_ne_bytes());
        d.extend_from_slice(&[0; 2]);
        d.extend_from_slice(&what.to_ne_bytes());
        d.extend_from_slice(&[0; 12]);
        d.extend_from_slice(data);
        d
    }

    fn ints(values: &[i32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_ne_bytes()).collect()
    }

    #[test]
    fn the_kernel_s_events_decode_and_bad_ones_are_refused() {
        assert_eq!(
            decode(&datagram(libc::PROC_EVENT_EXEC, &ints(&[42, 42]))),
            Ok(vec![ProcEvent::Exec { pid: 42, tgid: 42 }])
        );
        assert_eq!(
            decode(&datagram(libc::PROC_EVENT_FORK, &ints(&[1, 1, 43, 43]))),
            Ok(vec![ProcEvent::Fork {
                parent_tgid: 1,
                child_pid: 43,
                child_tgid: 43
            }])
        );
        let mut comm = ints(&[44, 44]);
        comm.extend_from_slice(b"mosquitto\0\0\0\0\0\0\0");
        assert_eq!(
            decode(&datagram(libc::PROC_EVENT_COMM, &comm)),
            Ok(vec![ProcEvent::Comm {
                pid: 44,
                tgid: 44,
                comm: "mosquitto".into()
            }])
        );
        let exit = ints(&[45, 45, 0, 9, 1, 1]);
        assert_eq!(
            decode(&datagram(libc::PROC_EVENT_EXIT, &exit)),
            Ok(vec![ProcEvent::Exit { pid: 45, tgid: 45 }])
        );
        // Two messages in one datagram.
        let mut two = datagram(libc::PROC_EVENT_EXEC, &ints(&[1, 1]));
        two.extend(datagram(libc::PROC_EVENT_EXIT, &exit));
        assert_eq!(decode(&two).map(|e| e.len()), Ok(2));
        // Refused, never trusted.
        assert_eq!(decode(&[0; 10]), Err(DecodeError::Length(10)));
        let mut long = datagram(libc::PROC_EVENT_EXEC, &ints(&[1, 1]));
        long[0] = 200;
        assert_eq!(decode(&long), Err(DecodeError::NetlinkLength(200)));
        let mut other = datagram(libc::PROC_EVENT_EXEC, &ints(&[1, 1]));
        other[16] = 9;
        assert!(matches!(
            decode(&other),
            Err(DecodeError::Connector { idx: 9, .. })
        ));
        assert!(matches!(
            decode(&datagram(libc::PROC_EVENT_FORK, &ints(&[1]))),
            Err(DecodeError::EventLength { .. })
        ));
    }

    #[test]
    fn the_census_follows_exec_fork_rename_and_exit_not_threads() {
        let mut census = Census::new("mosquitto");
        census.reset([
            (
                10,
                Called {
                    comm: "mosquitto".into(),
                    argv0: "/usr/sbin/mosquitto".into(),
                },
            ),
            (
                11,
                Called {
                    comm: "sshd".into(),
                    argv0: "/usr/sbin/sshd".into(),
                },
            ),
        ]);
        assert_eq!(census.count(), 1);
        let nobody = |_| None;
        // A thread of the broker is not another broker.
        assert!(!census.event(
            &ProcEvent::Fork {
                parent_tgid: 10,
                child_pid: 12,
                child_tgid: 10
            },
            nobody
        ));
        // A forked child runs its image: counted; it exits: not.
        assert!(census.event(
            &ProcEvent::Fork {
                parent_tgid: 10,
                child_pid: 13,
                child_tgid: 13
            },
            nobody
        ));
        assert_eq!(census.count(), 2);
        assert!(census.event(&ProcEvent::Exit { pid: 13, tgid: 13 }, nobody));
        // A thread's exit is not the process's.
        assert!(!census.event(&ProcEvent::Exit { pid: 12, tgid: 10 }, nobody));
        // Started again under a long path: matched by its file name.
        assert!(
            census.event(&ProcEvent::Exec { pid: 20, tgid: 20 }, |_| called(
                "mosquitto",
                "/opt/x/mosquitto"
            ))
        );
        // Something else exec'd: not counted; a counted one exec'ing away: removed.
        assert!(
            !census.event(&ProcEvent::Exec { pid: 21, tgid: 21 }, |_| called(
                "sh", "/bin/sh"
            ))
        );
        assert!(
            census.event(&ProcEvent::Exec { pid: 20, tgid: 20 }, |_| called(
                "sleep",
                "/bin/sleep"
            ))
        );
        // Renamed to the name (prctl): counted.
        assert!(census.event(
            &ProcEvent::Comm {
                pid: 22,
                tgid: 22,
                comm: "mosquitto".into()
            },
            |_| called("x", "/usr/bin/python3")
        ));
        assert_eq!(census.count(), 2);
        assert!(census.event(&ProcEvent::Exit { pid: 10, tgid: 10 }, nobody));
        assert!(census.event(&ProcEvent::Exit { pid: 22, tgid: 22 }, nobody));
        assert_eq!(census.count(), 0);
    }
}
