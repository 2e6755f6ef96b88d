//! The engine's clock and its sleep: realtime scheduling where permitted,
//! and one `epoll_pwait2` with a nanosecond timeout to the next absolute
//! deadline over the advert rings, the link socket and the wake eventfd.
//!
//! Owns: those syscalls. Must not: know instances or actions.

use super::*;

/// Realtime scheduling and locked memory, where permitted; reported, not fatal.
pub fn make_realtime() {
    let param = libc::sched_param { sched_priority: 50 };
    // SAFETY: plain syscalls on the calling thread / process.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        tracing::warn!(
            "SCHED_FIFO not permitted ({}); heartbeats run at normal priority",
            io::Error::last_os_error()
        );
    }
    // MCL_ONFAULT: lock pages as they are touched instead of faulting in
    // every mapping at once — thread stacks and allocator arenas would
    // otherwise count in full (it doubled the resident size).
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT) } != 0 {
        tracing::warn!(
            "mlockall not permitted ({}); memory may be paged",
            io::Error::last_os_error()
        );
    }
}

/// epoll with a nanosecond timeout (`epoll_pwait2`, Linux 5.11): one
/// syscall per wake-up, where a timerfd cost three (arm, wait, read). A
/// master wakes every fast interval, so each one counts.
pub(super) struct Poller {
    epoll: OwnedFd,
    /// `epoll_pwait2` missing (older kernel): millisecond timeouts, rounded
    /// up, with `epoll_wait`.
    coarse: std::cell::Cell<bool>,
}

impl Poller {
    pub(super) fn new(fds: &[RawFd]) -> io::Result<Self> {
        // SAFETY: plain syscalls; results checked.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(io::Error::last_os_error());
        }
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        for &fd in fds {
            let mut event = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: fd as u64,
            };
            if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) }
                != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(Self {
            epoll,
            coarse: std::cell::Cell::new(false),
        })
    }

    /// Sleeps until a descriptor is ready or `deadline` (absolute) passes;
    /// returns the ready descriptors.
    pub(super) fn wait(&self, deadline: Timestamp) -> Vec<RawFd> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 8];
        let timeout = deadline.saturating_since(now());
        let mut n = -1;
        if !self.coarse.get() {
            let spec = libc::timespec {
                tv_sec: timeout.as_secs() as i64,
                tv_nsec: i64::from(timeout.subsec_nanos()),
            };
            // SAFETY: valid buffer and timespec; no signal mask.
            n = unsafe {
                libc::syscall(
                    libc::SYS_epoll_pwait2,
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    &spec as *const libc::timespec,
                    std::ptr::null::<libc::sigset_t>(),
                    0usize,
                )
            } as i32;
            if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
                tracing::warn!(
                    "epoll_pwait2 unavailable (Linux < 5.11): timers have millisecond resolution"
                );
                self.coarse.set(true);
            }
        }
        if self.coarse.get() {
            let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
            // SAFETY: valid buffer.
            n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    ms,
                )
            };
        }
        events
            .iter()
            .take(n.max(0) as usize)
            .map(|event| event.u64 as RawFd)
            .collect()
    }
}

pub(super) fn drain_eventfd(fd: RawFd) {
    let mut value = 0u64;
    // SAFETY: reading 8 bytes from a non-blocking eventfd.
    unsafe { libc::read(fd, (&raw mut value).cast(), 8) };
}
