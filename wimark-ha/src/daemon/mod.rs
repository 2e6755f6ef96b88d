//! `wimark-ha run`: the daemon. Wires the config, the XDP monitors, the
//! engine thread and the control socket together, and takes them down again
//! in order on SIGTERM/SIGINT.
//!
//! ```text
//!  main thread (tokio)                      engine thread (SCHED_FIFO)
//!  ├─ signals ── Shutdown ─────────────────► epoll_pwait2 (ns deadline): advert
//!  │                                          rings, link events, wake eventfd
//!  ├─ control socket ── Switchover ────────►   state machines → VIP, GARP, adverts
//!  │                  ◄── status snapshot ──   (publishes status after each wake)
//!  ├─ role switcher    ◄── RoleEvent ───────   after the fast path
//!  ├─ observer         ◄── Observed ────────   journal, metrics, APs back
//!  ├─ metrics endpoint (reads the status snapshot at scrape time)
//!  └─ owns the XDP monitors (detached last)
//! ```
//!
//! Owns: start-up and shutdown order. Must not: run protocol logic (engine
//! and `vrrp::machine` do).
mod advert_socket;
mod ap_recovery;
mod engine;
mod link;
mod observer;
mod restart;
mod senders;
mod setup;
mod systemd;

use std::{
    os::fd::{FromRawFd, OwnedFd},
    path::Path,
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Context as _};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    config,
    control::{self, Request, Response},
    history::{self, Journal},
    metrics::Metrics,
    records::DaemonStatus,
    vip::Vips,
};
use engine::{Command, Engine, EngineInstance, Stopped};

fn eventfd() -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The script and file trackers' tasks (interface trackers ride on the
/// engine's link notifications); each observation goes to the engine as a
/// command. Aborted when the daemon stops.
fn spawn_trackers(
    instances: &[EngineInstance],
    commands: &mpsc::Sender<Command>,
    wake_fd: &Arc<OwnedFd>,
    stack_view: &tokio::sync::watch::Receiver<crate::records::StackView>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (i, instance) in instances.iter().enumerate() {
        for (k, tracker) in instance.config.trackers.iter().enumerate() {
            let commands = Mutex::new(commands.clone());
            let wake_fd = wake_fd.clone();
            let report = move |observation| {
                let sent = commands.lock().map(|c| {
                    c.send(Command::Track {
                        instance: i,
                        tracker: k,
                        observation,
                    })
                    .is_ok()
                });
                if matches!(sent, Ok(true)) {
                    wake(&wake_fd);
                }
            };
            let (name, tracker_name) = (instance.config.name.clone(), tracker.name.clone());
            match &tracker.kind {
                crate::config::TrackKind::Script(script) => tasks.push(tokio::spawn(
                    crate::track::script::run(name, tracker_name, script.clone(), report),
                )),
                crate::config::TrackKind::File(path) => tasks.push(tokio::spawn(
                    crate::track::file::watch(name, tracker_name, path.clone(), report),
                )),
                crate::config::TrackKind::Container(track) => {
                    tasks.push(tokio::spawn(crate::track::container::watch(
                        name,
                        tracker_name,
                        track.clone(),
                        stack_view.clone(),
                        report,
                    )))
                }
                crate::config::TrackKind::Process(track) => tasks.push(tokio::spawn(
                    crate::track::process::watch(name, tracker_name, track.clone(), report),
                )),
                crate::config::TrackKind::Interface(_) => {}
            }
        }
    }
    tasks
}

fn wake(fd: &OwnedFd) {
    use std::os::fd::AsRawFd as _;
    let one = 1u64;
    // SAFETY: writing 8 bytes to an eventfd.
    unsafe { libc::write(fd.as_raw_fd(), (&raw const one).cast(), 8) };
}

/// Removes the control socket however the daemon ends.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What the journal remembers from before this start: each instance's
/// transitions go back into its in-memory history (so `status` shows them),
/// and the last container switches of the `[roles]` instance are returned.
fn replay_history(
    state_dir: &Path,
    instances: &mut [EngineInstance],
    roles_instance: Option<&str>,
) -> anyhow::Result<Vec<crate::records::SwitchRecord>> {
    let past = history::read(state_dir)?;
    if past.damaged > 0 {
        tracing::warn!(
            "failover journal: {} damaged line(s) skipped (a crash mid-write?)",
            past.damaged
        );
    }
    if past.skipped_bytes > 0 {
        tracing::warn!(
            "failover journal: over its bound; its oldest {} bytes not read",
            past.skipped_bytes
        );
    }
    let mut switches = Vec::new();
    for entry in past.entries {
        match entry {
            history::Entry::Transition { instance, record } => {
                if let Some(i) = instances.iter_mut().find(|i| i.name() == instance) {
                    i.remember(record);
                }
            }
            history::Entry::Containers { instance, record }
                if Some(instance.as_str()) == roles_instance =>
            {
                switches.push(record);
            }
            _ => {}
        }
    }
    let keep_from = switches.len().saturating_sub(crate::roles::HISTORY_LEN);
    Ok(switches.split_off(keep_from))
}

pub fn run(
    config_path: &Path,
    state_dir: Option<&Path>,
    kernel_log: Option<log::Level>,
) -> anyhow::Result<()> {
    let mut config = match config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            // A restart in place whose new process cannot read the config
            // (an upgrade that reads it differently): the VIPs the old one
            // held must not outlive its hold.
            let dir = state_dir.map_or_else(
                || Path::new(crate::config::DEFAULT_STATE_DIR).to_path_buf(),
                Path::to_path_buf,
            );
            let held = restart::take(&dir);
            if !held.is_empty() {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(release_held(&held));
            }
            return Err(e.into());
        }
    };
    if let Some(dir) = state_dir {
        config.daemon.state_dir = dir.to_path_buf();
    }
    for warning in &config.warnings {
        tracing::warn!("{}: {warning}", config_path.display());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stopped = runtime.block_on(run_async(config, config_path, kernel_log))?;
    drop(runtime);
    match stopped {
        Stopped::Shutdown => Ok(()),
        Stopped::Restart(_) => {
            systemd::reloading();
            Err(restart::exec_self())
        }
    }
}

async fn run_async(
    config: config::Config,
    config_path: &Path,
    kernel_log: Option<log::Level>,
) -> anyhow::Result<Stopped> {
    // First, so a second daemon started by mistake stops here, before it
    // touches the interface (it would remove the running one's VIPs).
    let listener = control::bind(&config.daemon.control_socket)?;
    let held = restart::take(&config.daemon.state_dir);
    let result = run_bound(config, config_path, kernel_log, listener, &held).await;
    if result.is_err() {
        release_held(&held).await;
    }
    result
}

/// A daemon that fails after a restart hold gives the held VIPs up: no
/// process would own them, and the peer takes over once its wait ends.
async fn release_held(held: &[restart::Held]) {
    let Ok(vips) = Vips::connect() else { return };
    for entry in held {
        let Ok(index) = crate::vip::interface_index(&entry.interface) else {
            continue;
        };
        for address in &entry.virtual_ips {
            let vip = crate::config::VirtualIp {
                address: *address,
                prefix_len: if address.is_ipv4() { 32 } else { 128 },
            };
            if let Ok(true) = vips.remove(index, vip).await {
                tracing::warn!(instance = %entry.instance, %address, "a held VIP nobody resumes: removed");
            }
        }
    }
}

async fn run_bound(
    config: config::Config,
    config_path: &Path,
    kernel_log: Option<log::Level>,
    listener: tokio::net::UnixListener,
    held: &[restart::Held],
) -> anyhow::Result<Stopped> {
    let started_unix_ms = crate::clock::unix_ms();
    let socket_path = config.daemon.control_socket.clone();
    let _remove_socket = RemoveOnDrop(socket_path);
    let vips = Vips::connect()?;
    let links = setup::attach_links(&config.instances, &vips, kernel_log, config.ap_recovery.as_ref()).await?;
    // Where the witness's isolation rule looks for the peer: `[peer]
    // address`, the roles instance's unicast peers and heartbeat links.
    let witness_peers: Vec<std::net::IpAddr> = {
        let roles_instance = config
            .roles
            .as_ref()
            .and_then(|r| config.instances.iter().find(|i| i.name == r.instance));
        let mut peers: Vec<std::net::IpAddr> = config.peer.iter().map(|p| p.address).collect();
        if let Some(instance) = roles_instance {
            peers.extend(instance.unicast_peers.iter().copied());
            peers.extend(instance.heartbeats.iter().map(|h| h.peer));
        }
        peers.sort();
        peers.dedup();
        if config.witness.is_some() && peers.is_empty() {
            tracing::warn!("[witness] without a known peer address ([peer] address, peers, heartbeat links): losing the witness lease never stops the master stack here, since an isolated node cannot be told from a lost witness");
        }
        peers
    };
    let (mut instances, resumed) =
        setup::engine_instances(config.instances, &links, &vips, held).await?;
    let setup::Links {
        monitors,
        readers,
        allow_lists,
        ..
    } = links;
    // A held instance no longer resumable (config changed, VIP gone, the
    // wait over): its VIPs are nobody's now.
    let unclaimed: Vec<restart::Held> = held
        .iter()
        .filter(|h| !resumed.contains(&h.instance))
        .cloned()
        .collect();
    release_held(&unclaimed).await;

    let monitors = Arc::new(Mutex::new(monitors));
    let roles_instance = config.roles.as_ref().map(|r| r.instance.clone());
    // Time for the last notify and the role-bound programs' stop at exit.
    let switcher_grace = config.notify.as_ref().map_or(Duration::ZERO, |n| n.timeout)
        + crate::roles::PROCESS_STOP_GRACE
        + Duration::from_secs(5);
    // The journal first: what happened before this start is shown again.
    // One that cannot be read or written never stops a failover: the
    // daemon runs without it and says so (status, metrics, the log).
    let journal = Journal::open_or_degraded(&config.daemon.state_dir);
    let journal_health = journal.health();
    let past_switches = replay_history(
        &config.daemon.state_dir,
        &mut instances,
        roles_instance.as_deref(),
    )
    .unwrap_or_else(|e| {
        tracing::error!("failover journal: {e:#}; starting without the history before this start");
        Vec::new()
    });
    let (observed_tx, observed_rx) = tokio::sync::mpsc::unbounded_channel();
    let (commands_tx, commands_rx) = mpsc::channel();
    let wake_fd = Arc::new(eventfd()?);
    // `on_isolation = "release_vip"`: the switcher's isolation rule tells
    // the engine to give the roles instance's VIPs up, and to end that.
    let release_vips: Option<crate::roles::IsolationSink> = match (&config.witness, &roles_instance) {
        (Some(witness), Some(instance))
            if witness.on_isolation == crate::config::OnIsolation::ReleaseVip =>
        {
            let commands = Mutex::new(commands_tx.clone());
            let wake_fd = wake_fd.clone();
            let instance = instance.clone();
            Some(Box::new(move |isolated| {
                let sent = commands.lock().map(|c| {
                    c.send(Command::WitnessIsolation {
                        instance: instance.clone(),
                        isolated,
                    })
                    .is_ok()
                });
                if matches!(sent, Ok(true)) {
                    wake(&wake_fd);
                }
            }))
        }
        _ => None,
    };
    // The third vote, when configured: its lease is kept from the start,
    // so that a promotion finds it granted.
    let witness = config
        .witness
        .clone()
        .map(|witness| crate::witness::Witness::start(witness, witness_peers));
    let (roles_tx, roles_status, stack_view, switcher) = crate::roles::Switcher::spawn(
        config.roles.clone(),
        config.before_promote.clone(),
        config.notify.clone(),
        config.fencing.clone(),
        past_switches,
        {
            let observed = observed_tx.clone();
            let instance = roles_instance.clone().unwrap_or_default();
            Box::new(move |record| {
                let _ = observed.send(observer::Observed::StackSwitched {
                    instance: instance.clone(),
                    record: record.clone(),
                });
            })
        },
        witness.clone().map(|witness| crate::roles::WitnessLink {
            witness,
            release_vips,
        }),
    );
    let status = Arc::new(Mutex::new(DaemonStatus {
        started_unix_ms,
        ..Default::default()
    }));
    let (ap_recovery, ap_recovery_tasks) = match &config.ap_recovery {
        None => (None, Vec::new()),
        Some(recovery_config) => {
            let instance = instances
                .iter()
                .find(|i| i.config.name == recovery_config.instance)
                .context("[ap_recovery] instance")?;
            let (recovery, tasks) = ap_recovery::ApRecovery::start(
                recovery_config.clone(),
                monitors.clone(),
                instance.reader,
                instance
                    .config
                    .virtual_ips
                    .iter()
                    .map(|v| v.address)
                    .collect(),
                status.clone(),
            )
            .await?;
            (Some(recovery), tasks)
        }
    };
    let trackers = spawn_trackers(&instances, &commands_tx, &wake_fd, &stack_view);
    // Per instance, when its APs came back after its latest takeover
    // (written by the observer).
    let aps_back: Arc<Mutex<Vec<crate::recovery::LastApsBack>>> = Arc::default();
    // The status as `status` and the metrics endpoint see it.
    let snapshot: Arc<dyn Fn() -> DaemonStatus + Send + Sync> = {
        let status = status.clone();
        let monitors = monitors.clone();
        let roles_status = roles_status.clone();
        let roles_instance = roles_instance.clone();
        let ap_recovery = ap_recovery.clone();
        let aps_back = aps_back.clone();
        let witness = witness.clone();
        Arc::new(move || {
            let mut snapshot = status.lock().map(|s| s.clone()).unwrap_or_default();
            snapshot.journal = journal_health.lock().map(|j| j.clone()).unwrap_or_default();
            snapshot.ap_sync = ap_recovery.as_ref().map(|r| r.status());
            snapshot.aps_back = aps_back.lock().map(|a| a.clone()).unwrap_or_default();
            snapshot.witness = witness.as_ref().map(|w| w.status());
            if let Ok(monitors) = monitors.lock() {
                snapshot.monitors = monitors.iter().filter_map(|m| m.snapshot().ok()).collect();
            }
            if let Some(roles_instance) = &roles_instance {
                snapshot.roles = roles_status.lock().ok().map(|r| r.clone());
                // A failed container switch degrades the instance that
                // drives it: the VIP may be right while the apps are not.
                let degraded = snapshot.roles.as_ref().and_then(|r| r.degraded.clone());
                if let (Some(reason), Some(instance)) = (
                    degraded,
                    snapshot
                        .instances
                        .iter_mut()
                        .find(|i| &i.name == roles_instance),
                ) {
                    let reason = format!("containers: {reason}");
                    instance.fault = Some(match instance.fault.take() {
                        Some(fault) => format!("{fault}; {reason}"),
                        None => reason,
                    });
                }
            }
            snapshot
        })
    };
    let metrics = Arc::new(Metrics::new({
        let snapshot = snapshot.clone();
        move || snapshot()
    }));
    let metrics_server = match &config.metrics {
        Some(m) => {
            // Bound here so that a taken port fails the start, not later.
            let listener = tokio::net::TcpListener::bind(m.listen)
                .await
                .with_context(|| format!("metrics endpoint on {}", m.listen))?;
            Some(tokio::spawn(crate::metrics::serve(
                listener,
                metrics.clone(),
            )))
        }
        None => None,
    };
    let monitor_loggers = [tokio::spawn(observer::log_rogues(monitors.clone(), allow_lists)), tokio::spawn(observer::log_evictions(monitors.clone()))];
    let observer = tokio::spawn(observer::run(
        journal,
        metrics.clone(),
        monitors.clone(),
        observed_tx.downgrade(),
        observed_rx,
        ap_recovery.map(|recovery| observer::Recovery {
            after_containers: roles_instance.as_deref() == Some(recovery.config.instance.as_str()),
            recovery,
        }),
        aps_back,
    ));
    let handler: control::Handler = {
        let snapshot = snapshot.clone();
        let commands = Mutex::new(commands_tx.clone());
        let wake_fd = wake_fd.clone();
        let config_path = config_path.to_path_buf();
        // Sends a command that answers, and turns the answer into a response.
        let ask_engine =
            move |command: Command, reply_rx: mpsc::Receiver<Result<String, String>>| {
                let sent = commands.lock().map(|c| c.send(command).is_ok());
                if !matches!(sent, Ok(true)) {
                    return Response::failed("the engine is not running");
                }
                wake(&wake_fd);
                match reply_rx.recv_timeout(std::time::Duration::from_secs(5)) {
                    Ok(Ok(message)) => Response {
                        ok: true,
                        message: Some(message),
                        ..Default::default()
                    },
                    Ok(Err(error)) => Response::failed(&error),
                    Err(_) => Response::failed("the engine did not answer"),
                }
            };
        Arc::new(move |request| match request {
            Request::Status => Response {
                ok: true,
                status: Some(snapshot()),
                ..Default::default()
            },
            Request::Switchover { instance, back } => {
                let (reply, reply_rx) = mpsc::channel();
                ask_engine(
                    Command::Switchover {
                        instance,
                        back,
                        reply,
                    },
                    reply_rx,
                )
            }
            Request::Restart => {
                // The process that starts reads the file as it is now: a
                // config that would not load is refused here, while this
                // one still runs.
                let hold = match config::load(&config_path) {
                    Err(e) => {
                        return Response::failed(&format!("not restarting: {e}"));
                    }
                    Ok(new) => new.daemon.restart_hold,
                };
                let Some(hold) = hold else {
                    return Response::failed(&format!(
                        "not restarting: [daemon] restart_hold is not set in {} (without it, a restart hands mastership over and back)",
                        config_path.display()
                    ));
                };
                let (reply, reply_rx) = mpsc::channel();
                ask_engine(Command::RestartHold { hold, reply }, reply_rx)
            }
        })
    };
    let server = tokio::spawn(control::serve(listener, handler));

    let alive = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let engine_alive = alive.clone();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let engine_status = status.clone();
    let engine_wake = wake_fd.clone();
    let advert_senders = config.daemon.advert_senders;
    let sync_groups: Vec<engine::sync::SyncGroup> = config
        .sync_groups
        .iter()
        .map(|group| engine::sync::SyncGroup {
            name: group.name.clone(),
            members: group
                .instances
                .iter()
                .filter_map(|name| instances.iter().position(|i| &i.config.name == name))
                .collect(),
        })
        .collect();
    let engine = std::thread::Builder::new()
        .name("wimark-ha engine".to_string())
        .spawn(move || {
            let result = (|| -> anyhow::Result<Stopped> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let vips = {
                    let _guard = runtime.enter();
                    Vips::connect()?
                };
                Engine {
                    instances,
                    readers,
                    vips,
                    runtime,
                    commands: commands_rx,
                    wake: engine_wake,
                    status: engine_status,
                    roles: roles_tx,
                    observer: observed_tx,
                    alive: engine_alive,
                    status_changed: true,
                    links: link::LinkWatcher::new()?,
                    advert_senders,
                    senders: None,
                    local_addresses: Default::default(),
                    sync_groups,
                    syncing: false,
                }
                .run()
            })();
            let _ = done_tx.send(());
            result
        })?;
    tracing::info!(socket = %config.daemon.control_socket.display(), "wimark-ha running");
    let watchdog = systemd::ready_and_watchdog(alive);

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let engine_stopped_first = tokio::select! {
        _ = terminate.recv() => false,
        _ = interrupt.recv() => false,
        _ = done_rx => true,
    };
    if !engine_stopped_first {
        tracing::info!("shutting down: resigning mastership, removing VIPs");
        systemd::stopping();
        let _ = commands_tx.send(Command::Shutdown);
        wake(&wake_fd);
    }
    let result = tokio::task::spawn_blocking(move || engine.join()).await?;
    // The engine dropped its sender: the switcher runs the notify for the
    // last transition and stops the role-bound programs, then ends.
    if tokio::time::timeout(switcher_grace, switcher)
        .await
        .is_err()
    {
        tracing::warn!(
            "the role switcher did not finish within {switcher_grace:?}; exiting anyway"
        );
    }
    // The engine and the switcher have hung up: the observer writes what
    // is queued and ends (APs-back watchers still waiting are given up).
    if tokio::time::timeout(Duration::from_secs(1), observer)
        .await
        .is_err()
    {
        tracing::warn!("the observer did not finish within 1 s");
    }
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    monitor_loggers.iter().for_each(|logger| logger.abort());
    // A script running now is killed with its task (kill_on_drop).
    for task in trackers {
        task.abort();
    }
    for task in ap_recovery_tasks {
        task.abort();
    }
    if let Some(server) = metrics_server {
        server.abort();
    }
    server.abort();
    drop(monitors); // XDP detached last: the engine needed it to the end
    match result {
        Ok(Ok(Stopped::Shutdown)) if !engine_stopped_first => Ok(Stopped::Shutdown),
        Ok(Ok(Stopped::Restart(held))) => {
            // Held VIPs stay; the next process finds them through this file.
            restart::leave(&config.daemon.state_dir, &held)
                .context("leaving the restart hold for the next process")?;
            tracing::info!("restarting in place");
            Ok(Stopped::Restart(held))
        }
        Ok(Ok(Stopped::Shutdown)) => bail!("the engine stopped unexpectedly"),
        Ok(Err(e)) => Err(e.context("engine")),
        Err(_) => bail!("the engine thread panicked"),
    }
}
