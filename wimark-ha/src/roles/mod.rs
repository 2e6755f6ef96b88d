//! Which container stack runs on this server: what the seed's
//! `master-backup.sh` did with `docker-compose down/up`, done through the
//! Docker API on containers created beforehand — ordered, awaited, timed,
//! retried, and never two switches at once.
//!
//! Owns: the role switcher task (one per daemon), its Docker calls, hooks
//! and notify calls, and its status. Must not: touch the VIP or the VRRP
//! state (the fast path is done before it is told anything).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bollard::{
    query_parameters::{ListContainersOptions, StartContainerOptions, StopContainerOptions},
    ClientVersion, Docker,
};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

mod docker;
mod order;
mod process;

pub use docker::list as stack_members;
use docker::{list, not_modified, start_until_ready};
pub use order::Member;
use order::Order;
pub use process::PROCESS_STOP_GRACE;
use process::{supervise, Supervised};

use crate::{
    clock::unix_ms,
    config::{FencingConfig, Hook, HookAction, NotifyConfig, RolesConfig, Selector},
    hooks,
    records::{ProcessStatus, RolesStatus, Stack, StackView, SwitchRecord},
    vrrp::{Reason, State},
};

/// The engine's word that an instance changed state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleEvent {
    pub instance: String,
    pub state: State,
    pub priority: u8,
    /// Why: MASTER because the peer went silent (`Reason::peer_lost`) is
    /// fenced first, when `[fencing]` is configured; BACKUP because this
    /// node handed over (`Reason::handed_over`) demotes at once.
    pub reason: Reason,
    /// The instance's sync group, and whether this instance speaks for it
    /// (its first member): one notify per group, keepalived's "GROUP".
    pub group: Option<(String, bool)>,
}

/// Switch records kept in `status` (the journal keeps more).
pub const HISTORY_LEN: usize = 32;
/// Docker 20.10 speaks API 1.41; newer daemons accept it too.
const API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};
const START_ATTEMPTS: u32 = 3;
/// How long after "running" a container is checked again for an early exit.
const SETTLE: Duration = Duration::from_millis(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Master,
    Backup,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Backup => "backup",
        }
    }
}

impl From<Role> for Stack {
    fn from(role: Role) -> Stack {
        match role {
            Role::Master => Stack::Master,
            Role::Backup => Stack::Backup,
        }
    }
}

pub struct Switcher {
    roles: Option<RolesConfig>,
    hooks: Vec<Hook>,
    notify: Option<NotifyConfig>,
    fencing: Option<FencingConfig>,
    status: Arc<Mutex<RolesStatus>>,
    supervised: Mutex<Vec<Supervised>>,
    /// Told of every switch record (the daemon journals them).
    on_record: RecordSink,
    /// Whether the master stack should run here, for container trackers.
    view: tokio::sync::watch::Sender<StackView>,
    /// `[witness]`: the key a promotion waits for and a demotion releases.
    witness: Option<Arc<crate::witness::Witness>>,
    /// `on_isolation = "release_vip"`: tells the engine to give the roles
    /// instance's VIPs up while isolated (`true`) and to take part again
    /// (`false`).
    release_vips: Option<IsolationSink>,
}

/// Carries the isolation rule's word on the VIPs to the engine.
pub type IsolationSink = Box<dyn Fn(bool) + Send + Sync>;

/// `[witness]` as the switcher is given it.
pub struct WitnessLink {
    pub witness: Arc<crate::witness::Witness>,
    /// Set with `on_isolation = "release_vip"` (see `Switcher`).
    pub release_vips: Option<IsolationSink>,
}

/// What the witness's isolation rule did on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isolation {
    No,
    /// The master stack stopped while the VRRP instance stays master and
    /// keeps the VIPs (`keep_vip`): it starts again once the key is ours.
    StackStopped,
    /// The master stack stopped and the VIPs were given up (`release_vip`):
    /// the instance is in FAULT until the key is ours or the peer answers;
    /// then it starts over as BACKUP and VRRP decides.
    VipsReleased,
}

/// What the witness said about a promotion.
enum Keyed {
    /// The key is ours (after this wait), or no witness is configured.
    Yes(Duration),
    /// A newer state change came first (`None`: the daemon is stopping).
    Interrupted(Option<RoleEvent>),
}

/// What fencing decided about a promotion.
enum Fenced {
    /// Fenced, or nothing to fence: promote.
    Yes,
    /// Fencing failed: recorded, the containers stay as they are.
    No,
    /// A newer state change came first (`None`: the daemon is stopping).
    Interrupted(Option<RoleEvent>),
}

/// Where finished switch records go besides `status`.
pub type RecordSink = Box<dyn Fn(&SwitchRecord) + Send + Sync>;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The state word keepalived's notify script gets (its third argument).
fn notify_state(state: State) -> &'static str {
    match state {
        // An instance returns to Initialize only when the daemon stops:
        // keepalived's notify says STOP then.
        State::Initialize => "STOP",
        State::Fault => "FAULT",
        State::Backup => "BACKUP",
        State::Master => "MASTER",
    }
}

impl Switcher {
    /// A switcher not attached to a daemon (benchmarks drive it directly).
    pub fn new(roles: RolesConfig) -> Self {
        let status = Arc::new(Mutex::new(RolesStatus {
            stack: Stack::None,
            ..Default::default()
        }));
        Self {
            roles: Some(roles),
            hooks: Vec::new(),
            notify: None,
            fencing: None,
            status,
            supervised: Mutex::new(Vec::new()),
            on_record: Box::new(|_| {}),
            view: tokio::sync::watch::Sender::new(StackView {
                roles: true,
                ..Default::default()
            }),
            witness: None,
            release_vips: None,
        }
    }

    /// One switch to the master stack (`true`) or the backup stack, exactly
    /// as the daemon does it; `Err` when Docker cannot be reached.
    pub async fn switch_once(&self, to_master: bool) -> Result<SwitchRecord, String> {
        let role = if to_master {
            Role::Master
        } else {
            Role::Backup
        };
        self.try_switch(role, Duration::ZERO, None).await
    }

    /// Starts the switcher on the current tokio runtime.
    /// The switcher task; it ends once the sender is dropped and its last
    /// notify and program stops are done (await the handle on shutdown).
    pub fn spawn(
        roles: Option<RolesConfig>,
        hooks: Vec<Hook>,
        notify: Option<NotifyConfig>,
        fencing: Option<FencingConfig>,
        history: Vec<SwitchRecord>,
        on_record: RecordSink,
        witness: Option<WitnessLink>,
    ) -> (
        UnboundedSender<RoleEvent>,
        Arc<Mutex<RolesStatus>>,
        tokio::sync::watch::Receiver<StackView>,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new(RolesStatus {
            stack: Stack::None,
            history,
            ..Default::default()
        }));
        let (view, view_rx) = tokio::sync::watch::channel(StackView {
            roles: roles.is_some(),
            ..Default::default()
        });
        let (witness, release_vips) = match witness {
            Some(link) => (Some(link.witness), link.release_vips),
            None => (None, None),
        };
        let switcher = Self {
            view,
            roles,
            hooks,
            notify,
            fencing,
            status: status.clone(),
            supervised: Mutex::new(Vec::new()),
            on_record,
            witness,
            release_vips,
        };
        let task = tokio::spawn(switcher.run(rx));
        (tx, status, view_rx, task)
    }

    /// Until the engine hangs up (daemon shutdown); then the role-bound
    /// programs are stopped, containers left as they are.
    async fn run(self, mut rx: UnboundedReceiver<RoleEvent>) {
        let mut next: Option<RoleEvent> = None;
        let mut engine_gone = false;
        // What the isolation rule did (see `next_event`).
        let mut isolation = Isolation::No;
        while !engine_gone {
            let event = match next.take() {
                Some(event) => event,
                None => match self.next_event(&mut rx, &mut isolation).await {
                    Some(event) => event,
                    None => break,
                },
            };
            self.view.send_if_modified(|view| {
                let was = view.masters.iter().any(|m| m == &event.instance);
                let is = event.state == State::Master;
                if was == is {
                    return false;
                }
                view.masters.retain(|m| m != &event.instance);
                if is {
                    view.masters.push(event.instance.clone());
                }
                true
            });
            let drives_roles = self
                .roles
                .as_ref()
                .is_some_and(|r| r.instance == event.instance);
            if drives_roles {
                next = match event.state {
                    State::Master => match self.fence(&mut rx, event.reason.peer_lost()).await {
                        Fenced::Yes => match self.witness_key(&mut rx).await {
                            Keyed::Yes(waited) => {
                                let newer = self.switch(&mut rx, Role::Master, waited, None).await;
                                if newer.is_none() {
                                    self.start_processes();
                                }
                                newer
                            }
                            Keyed::Interrupted(newer) => newer,
                        },
                        Fenced::No => None,
                        Fenced::Interrupted(newer) => newer,
                    },
                    State::Backup => {
                        // A hand-over of our own (`switchover`) is no flap:
                        // nothing to wait out, and the peer's promotion
                        // waits for our stack to stop (and, with a witness,
                        // for the key released after it).
                        let delay = if event.reason.handed_over() {
                            Duration::ZERO
                        } else {
                            self.roles.as_ref().map_or(Duration::ZERO, |r| r.demote_delay)
                        };
                        // Master-only programs stop at once: a mirror left
                        // running on a node that is no longer master would
                        // push its stale copy over the new master's files.
                        self.stop_processes().await;
                        // The seed's "sleep, then re-check": a flap back to
                        // MASTER meanwhile cancels the demotion.
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {
                                // The witness key is released inside, once
                                // the master stack is stopped.
                                self.switch(&mut rx, Role::Backup, Duration::ZERO, None).await
                            }
                            newer = rx.recv() => {
                                if newer.as_ref().is_some_and(|n| n.instance == event.instance) {
                                    tracing::info!("demotion cancelled: {} changed state within demote_delay", event.instance);
                                    self.record(SwitchRecord { at_unix_ms: unix_ms(), to: Stack::Backup, cancelled: true, ..Default::default() });
                                }
                                // None: the daemon is stopping; the notify
                                // below still runs for this state.
                                engine_gone = newer.is_none();
                                newer
                            }
                        }
                    }
                    // FAULT / INIT: containers stay as they are; the
                    // master-only programs stop (this node is not master).
                    State::Initialize | State::Fault => {
                        self.stop_processes().await;
                        None
                    }
                };
            }
            // A sync group's members move together: its first member's
            // events are the group's, the others' are not told again.
            let notified = match &event.group {
                None => Some(("INSTANCE", event.instance.as_str())),
                Some((group, true)) => Some(("GROUP", group.as_str())),
                Some((_, false)) => None,
            };
            if let (Some(notify), Some((kind, name))) = (&self.notify, notified) {
                let outcome = hooks::notify(
                    notify,
                    kind,
                    name,
                    notify_state(event.state),
                    event.priority,
                )
                .await;
                if outcome.ok {
                    tracing::info!(instance = %event.instance, "notify script: {}", outcome.detail);
                } else {
                    tracing::warn!(instance = %event.instance, "notify script failed: {}", outcome.detail);
                }
            }
        }
        self.stop_processes().await;
    }

    /// Runs `[fencing]` before a promotion that follows the peer's silence
    /// (not a hand-over: a peer that resigned is alive and stepping down).
    /// A failure is recorded and the promotion held back; a newer event
    /// interrupts it (the command is killed).
    async fn fence(&self, rx: &mut UnboundedReceiver<RoleEvent>, peer_lost: bool) -> Fenced {
        let Some(fencing) = self.fencing.as_ref().filter(|_| peer_lost) else {
            return Fenced::Yes;
        };
        let hook = Hook {
            action: HookAction::Run(fencing.command.clone()),
            timeout: fencing.timeout,
            blocking: true,
        };
        let outcome = tokio::select! {
            outcome = hooks::run_hook(&hook) => outcome,
            newer = rx.recv() => {
                tracing::warn!("fencing interrupted by a newer state change; promotion not done");
                return Fenced::Interrupted(newer);
            }
        };
        if outcome.ok {
            tracing::info!(
                took_ms = ms(outcome.took),
                "fencing succeeded: {}",
                outcome.detail
            );
            return Fenced::Yes;
        }
        tracing::error!(
            "fencing `{}` failed: {}; the master stack is not started",
            outcome.what,
            outcome.detail
        );
        self.record(SwitchRecord {
            at_unix_ms: unix_ms(),
            to: Stack::Master,
            hooks: outcome.took,
            total: outcome.took,
            problems: vec![format!(
                "fencing `{}` failed: {}",
                outcome.what, outcome.detail
            )],
            held_back: true,
            ..Default::default()
        });
        Fenced::No
    }

    /// The next state change; meanwhile, with a witness, the isolation
    /// rule: while the master stack runs here and our lease is at risk, a
    /// peer that does not answer either means this node is the cut-off
    /// side — the peer will get the key once our lease expires — so the
    /// master stack stops now, before that (and, with `on_isolation =
    /// "release_vip"`, the VIPs go too). A peer that answers means only the
    /// witness is lost: nothing moves.
    async fn next_event(
        &self,
        rx: &mut UnboundedReceiver<RoleEvent>,
        isolation: &mut Isolation,
    ) -> Option<RoleEvent> {
        let Some(witness) = self.witness.clone() else {
            return rx.recv().await;
        };
        let mut at_risk = witness.at_risk();
        let mut said_peer_answers = false;
        loop {
            match *isolation {
                Isolation::No => {}
                Isolation::StackStopped => tokio::select! {
                    event = rx.recv() => {
                        if self.ends_isolation(event.as_ref()) {
                            self.end_isolation(&witness, isolation);
                        }
                        return event;
                    }
                    waited = witness.acquire() => {
                        tracing::info!("the witness key is ours again: the master stack starts again");
                        self.end_isolation(&witness, isolation);
                        if let Some(newer) = self.switch(rx, Role::Master, waited, None).await {
                            return Some(newer);
                        }
                        self.start_processes();
                        continue;
                    }
                },
                Isolation::VipsReleased => {
                    // The instance is deaf in FAULT: whether the peer is
                    // back is asked here, beside the wait for the key (one
                    // wait, never restarted: it logs each change once).
                    let acquire = witness.acquire();
                    tokio::pin!(acquire);
                    let mut ask_peer = tokio::time::interval(Duration::from_millis(500));
                    loop {
                        tokio::select! {
                            event = rx.recv() => {
                                if self.ends_isolation(event.as_ref()) {
                                    self.end_isolation(&witness, isolation);
                                }
                                return event;
                            }
                            _ = &mut acquire => {
                                tracing::info!("the witness key is ours again: isolation over, the VIPs take part again (as BACKUP first; VRRP decides)");
                                break;
                            }
                            _ = ask_peer.tick() => {
                                if witness.peer_answers().await == Some(true) {
                                    tracing::info!("the peer answers again: isolation over, the VIPs take part again (as BACKUP first; VRRP decides)");
                                    break;
                                }
                            }
                        }
                    }
                    self.end_isolation(&witness, isolation);
                    continue;
                }
            }
            let master_stack = self.status.lock().is_ok_and(|s| s.stack == Stack::Master);
            if !master_stack {
                return rx.recv().await;
            }
            // The stack runs without the key: our lease ran out while etcd
            // was away and the peer answered. Claimed back as soon as etcd
            // answers; held by the peer means its stack runs, so ours stops.
            if !witness.status().holds_key && !witness.lease_left().is_zero() {
                match witness.reclaim().await {
                    Ok(()) => {
                        tracing::info!("the witness key is ours again: the master stack runs on")
                    }
                    Err(crate::witness::WitnessError::HeldByPeer(node)) => {
                        tracing::error!("{node} holds the witness key while our master stack runs: stopping ours");
                        witness.set_isolated(true);
                        self.stop_processes().await;
                        if let Some(newer) = self
                            .switch(rx, Role::Backup, Duration::ZERO, Some(Duration::ZERO))
                            .await
                        {
                            witness.set_isolated(false);
                            return Some(newer);
                        }
                        // The peer spoke to etcd lately: not cut off from
                        // everyone, so the VIPs are left to VRRP.
                        *isolation = Isolation::StackStopped;
                        continue;
                    }
                    Err(_) => {}
                }
            }
            if !*at_risk.borrow_and_update() {
                // Woken by any change: the lease back (claim again above)
                // or at risk (below).
                tokio::select! {
                    event = rx.recv() => return event,
                    changed = at_risk.changed() => {
                        if changed.is_err() {
                            return rx.recv().await;
                        }
                        continue;
                    }
                }
            }
            match witness.peer_answers().await {
                Some(false) => {
                    // Gone before our lease is: docker's grace (whole
                    // seconds) is cut to what the lease leaves, less a
                    // margin for the calls themselves.
                    let budget = witness
                        .lease_left()
                        .saturating_sub(Duration::from_millis(300));
                    tracing::error!(
                        budget_ms = budget.as_millis() as u64,
                        "isolated: the witness lease cannot be renewed and the peer does not answer; stopping the master stack before the peer may take the key"
                    );
                    witness.set_isolated(true);
                    self.stop_processes().await;
                    if let Some(newer) = self
                        .switch(rx, Role::Backup, Duration::ZERO, Some(budget))
                        .await
                    {
                        witness.set_isolated(false);
                        return Some(newer);
                    }
                    // The stack first (its stop has a deadline: our
                    // lease), then the VIPs: the instance's FAULT comes
                    // back as an event, after this switch, not into it.
                    *isolation = match &self.release_vips {
                        Some(release) => {
                            tracing::error!("isolated: giving the VIPs up (on_isolation = \"release_vip\") until the witness key is ours or the peer answers");
                            release(true);
                            Isolation::VipsReleased
                        }
                        None => Isolation::StackStopped,
                    };
                }
                answer => {
                    if !said_peer_answers {
                        said_peer_answers = true;
                        tracing::warn!(
                            "the witness lease cannot be renewed, but {}: the master stack stays",
                            if answer.is_some() {
                                "the peer answers (only the witness is lost)"
                            } else {
                                "the peer cannot be probed (no address of it could be pinged; link-local IPv6 ones are not)"
                            }
                        );
                    }
                    // Asked again a few times per TTL while the risk lasts.
                    tokio::select! {
                        event = rx.recv() => return event,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
    }

    /// Whether an event ends the isolation: a move of the roles instance
    /// (the peer heard again, a shutdown) but not its FAULT that
    /// `release_vip` itself caused, nor another instance's; `None`: the
    /// daemon stops.
    fn ends_isolation(&self, event: Option<&RoleEvent>) -> bool {
        event.is_none_or(|event| {
            self.roles.as_ref().is_some_and(|r| r.instance == event.instance)
                && event.reason != crate::vrrp::Reason::WitnessIsolated
        })
    }

    /// The isolation is over: the status says so, and VIPs given up take
    /// part again.
    fn end_isolation(&self, witness: &crate::witness::Witness, isolation: &mut Isolation) {
        witness.stop_waiting();
        witness.set_isolated(false);
        if *isolation == Isolation::VipsReleased {
            if let Some(release) = &self.release_vips {
                release(false);
            }
        }
        *isolation = Isolation::No;
    }

    /// Waits for the witness key before a promotion (at once without a
    /// `[witness]`); a newer event interrupts the wait.
    async fn witness_key(&self, rx: &mut UnboundedReceiver<RoleEvent>) -> Keyed {
        let Some(witness) = &self.witness else {
            return Keyed::Yes(Duration::ZERO);
        };
        tokio::select! {
            waited = witness.acquire() => Keyed::Yes(waited),
            newer = rx.recv() => {
                witness.stop_waiting();
                tracing::info!("promotion no longer waits for the witness key: a newer state change came first");
                Keyed::Interrupted(newer)
            }
        }
    }

    /// Starts the role-bound programs unless they already run.
    fn start_processes(&self) {
        let Some(roles) = &self.roles else { return };
        let Ok(mut supervised) = self.supervised.lock() else {
            return;
        };
        if !supervised.is_empty() {
            return;
        }
        for argv in &roles.master_processes {
            let (stop, stop_rx) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(supervise(argv.clone(), self.status.clone(), stop_rx));
            supervised.push(Supervised { stop, task });
        }
    }

    /// Stops the role-bound programs and waits until they are gone.
    async fn stop_processes(&self) {
        let running: Vec<Supervised> = match self.supervised.lock() {
            Ok(mut supervised) => supervised.drain(..).collect(),
            Err(_) => return,
        };
        for process in &running {
            let _ = process.stop.send(true);
        }
        for process in running {
            let _ = process.task.await;
        }
    }

    fn record(&self, record: SwitchRecord) {
        (self.on_record)(&record);
        if let Ok(mut status) = self.status.lock() {
            if !record.cancelled {
                // Held back: the containers are where they were.
                if !record.held_back {
                    status.stack = record.to;
                    let master_stack = record.to == Stack::Master;
                    self.view.send_if_modified(|view| {
                        std::mem::replace(&mut view.master_stack, master_stack) != master_stack
                    });
                }
                status.degraded = (!record.problems.is_empty()).then(|| record.problems.join("; "));
            }
            if status.history.len() == HISTORY_LEN {
                status.history.remove(0);
            }
            status.history.push(record);
        }
    }

    /// Switches to `role`, retrying with backoff while dockerd cannot be
    /// reached. A newer event interrupts the retries; it is returned.
    async fn switch(
        &self,
        rx: &mut UnboundedReceiver<RoleEvent>,
        role: Role,
        witness_wait: Duration,
        stop_within: Option<Duration>,
    ) -> Option<RoleEvent> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.try_switch(role, witness_wait, stop_within).await {
                Ok(record) => {
                    tracing::info!(
                        to = role.name(),
                        hooks_ms = ms(record.hooks),
                        stop_ms = ms(record.stop),
                        start_ms = ms(record.start),
                        ready_ms = ms(record.ready),
                        total_ms = ms(record.total),
                        problems = ?record.problems,
                        "role switch"
                    );
                    self.record(record);
                    return None;
                }
                Err(e) => {
                    tracing::warn!(
                        to = role.name(),
                        "role switch failed, retrying in {backoff:?}: {e}"
                    );
                    if let Ok(mut status) = self.status.lock() {
                        status.degraded =
                            Some(format!("switching to {}: {e} (retrying)", role.name()));
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        newer = rx.recv() => return newer,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// One attempt. `Err` only when Docker itself cannot be reached (worth
    /// retrying); container and hook failures are reported in the record.
    /// `stop_within`: a stop budget below `stop_timeout` (the isolation
    /// rule's: the containers must be gone before our lease is).
    async fn try_switch(
        &self,
        role: Role,
        witness_wait: Duration,
        stop_within: Option<Duration>,
    ) -> Result<SwitchRecord, String> {
        let Some(roles) = &self.roles else {
            return Err("no [roles] configured".to_string());
        };
        let started = Instant::now();
        let docker =
            Docker::connect_with_unix(&roles.docker_socket.display().to_string(), 30, &API_VERSION)
                .map_err(|e| format!("Docker socket {}: {e}", roles.docker_socket.display()))?;
        docker
            .ping()
            .await
            .map_err(|e| format!("dockerd not answering: {e}"))?;
        let mut record = SwitchRecord {
            at_unix_ms: unix_ms(),
            to: role.into(),
            witness: witness_wait,
            ..Default::default()
        };
        if role == Role::Master {
            for hook in &self.hooks {
                let outcome = hooks::run_hook(hook).await;
                if !outcome.ok {
                    record
                        .problems
                        .push(format!("hook `{}`: {}", outcome.what, outcome.detail));
                    if hook.blocking {
                        record
                            .problems
                            .push("blocking hook failed: containers left as they were".to_string());
                        record.held_back = true;
                        // No master stack here: the key would only keep a
                        // peer that is master too (a cut peer link) from
                        // starting one.
                        if let Some(witness) = &self.witness {
                            witness.release().await;
                        }
                        record.hooks = started.elapsed();
                        record.total = record.hooks;
                        return Ok(record);
                    }
                }
            }
        }
        record.hooks = started.elapsed();
        let (from, to) = match role {
            Role::Master => (&roles.backup, &roles.master),
            Role::Backup => (&roles.master, &roles.backup),
        };
        let stop_started = Instant::now();
        let stopping = list(&docker, from).await?;
        let stop_order = Order::of(&stopping, |path| std::fs::read_to_string(path));
        record.problems.extend(stop_order.problems.iter().cloned());
        let stop_options = StopContainerOptions {
            t: Some(
                stop_within
                    .map_or(roles.stop_timeout, |w| w.min(roles.stop_timeout))
                    .as_secs() as i32,
            ),
            signal: None,
        };
        // Dependents stop before what they depend on, as `compose down` does.
        let results = stop_order
            .stop(|index| {
                let docker = &docker;
                let options = stop_options.clone();
                let member = &stopping[index];
                async move {
                    match docker.stop_container(&member.id, Some(options)).await {
                        Err(e) if !not_modified(&e) => {
                            Some(format!("stopping {}: {e}", member.name))
                        }
                        _ => None,
                    }
                }
            })
            .await;
        let stop_failures: Vec<String> = results.into_iter().flatten().collect();
        record.stop = stop_started.elapsed();
        if role == Role::Backup {
            if let Some(witness) = &self.witness {
                if stop_failures.is_empty() {
                    // The master stack is stopped here: the key goes now,
                    // before the backup stack starts, so that a waiting
                    // peer promotes at once, not after our TTL.
                    witness.release().await;
                } else {
                    tracing::error!("the witness key is kept: the master stack may still run here ({})", stop_failures.join("; "));
                }
            }
        }
        record.problems.extend(stop_failures);
        let start_started = Instant::now();
        let starting = list(&docker, to).await?;
        if starting.is_empty() {
            record.problems.push(format!("no containers match {to}: create the stack beforehand (docker-compose -p NAME up --no-start)"));
        }
        // Each container starts once what it depends on is ready (compose's
        // depends_on); the rest of the stack in parallel.
        let start_order = Order::of(&starting, |path| std::fs::read_to_string(path));
        record.problems.extend(start_order.problems.iter().cloned());
        let results = start_order
            .start(|index| {
                let member = &starting[index];
                start_until_ready(&docker, &member.id, &member.name, roles.start_timeout)
            })
            .await;
        record.start = start_started.elapsed();
        record.ready = record.start;
        // A container that dies right after starting looked ready for an
        // instant: look again after SETTLE, start the dead ones again, and
        // report those that keep dying.
        let mut problems = results;
        for round in 1..=START_ATTEMPTS {
            tokio::time::sleep(SETTLE).await;
            let mut down = Vec::new();
            for (index, member) in starting.iter().enumerate() {
                if problems[index].is_some() {
                    continue;
                }
                let (id, name) = (&member.id, &member.name);
                let state = docker
                    .inspect_container(id, None)
                    .await
                    .ok()
                    .and_then(|i| i.state);
                if !state.as_ref().and_then(|s| s.running).unwrap_or(false) {
                    let code = state.and_then(|s| s.exit_code).unwrap_or_default();
                    down.push((index, id.clone(), name.clone(), code));
                }
            }
            if down.is_empty() {
                break;
            }
            for (index, id, name, code) in down {
                if round == START_ATTEMPTS {
                    problems[index] = Some(format!(
                        "{name} exited (code {code}) right after starting, {round} times"
                    ));
                } else if let Err(e) = docker
                    .start_container(&id, None::<StartContainerOptions>)
                    .await
                {
                    problems[index] = Some(format!("starting {name} again: {e}"));
                }
            }
        }
        record.problems.extend(problems.into_iter().flatten());
        record.total = started.elapsed();
        Ok(record)
    }
}
