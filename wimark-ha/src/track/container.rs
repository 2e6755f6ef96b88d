//! A container tracker: the health of a master-stack container (or of every
//! container with a label), pushed by the Docker events API.
//!
//! Owns: what each watched container looks like (running, health) from
//! Docker's events and one inspect per event, the grace ("bad for longer
//! than `grace`": a container that keeps dying and restarting is one bad
//! spell, not many short ones), whether the tracker is judged at all (the
//! master stack is stopped on purpose on a backup), and Docker's own
//! absence (degraded: nothing moves). Must not: weigh the verdict (the
//! tracker does) or start and stop containers (the role switch does).
//!
//! `Spell` is the timing, sans-IO (evidence and time in, a verdict out);
//! `watch` is its driver.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use bollard::{
    models::HealthStatusEnum,
    query_parameters::{EventsOptions, ListContainersOptions},
    Docker,
};
use futures_util::StreamExt as _;

use super::Observation;
use crate::{
    config::{ContainerTarget, ContainerTrack},
    records::StackView,
};

/// How long a lost Docker connection waits before it is tried again.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// The grace timing of one tracker.
///
/// Bad evidence counts only while the tracker is judged; a spell begins at
/// the first bad evidence (or when judging begins on a container already
/// bad) and ends only after good evidence has held for `grace` — so a
/// crash loop whose restarts come faster than `grace` stays one spell. The
/// tracker fails when a spell has lasted `grace`, and heals once good
/// evidence has held for `grace`, judged or not: a backup on which the
/// operator has the container healthy again heals, one on which it is
/// stopped stays failed (its priority stays down, so it does not preempt
/// back into the same dead service).
#[derive(Clone, Debug)]
pub struct Spell {
    grace: Duration,
    judged: bool,
    /// The present evidence: `Some(why)` bad, `None` good.
    bad: Option<String>,
    bad_since: Option<Instant>,
    good_since: Option<Instant>,
    failed: bool,
}

/// A verdict `Spell::poll` hands to the tracker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement {
    pub healthy: bool,
    pub detail: String,
}

impl Spell {
    /// Nothing known yet: healthy, not judged.
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            judged: false,
            bad: None,
            bad_since: None,
            good_since: None,
            failed: false,
        }
    }

    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Judging begins (the master stack is in force here) or ends (it is
    /// stopped on purpose, or Docker cannot be asked).
    pub fn judge(&mut self, now: Instant, judged: bool) {
        self.judged = judged;
        if !judged {
            self.bad_since = None;
        } else if self.bad.is_some() {
            self.bad_since.get_or_insert(now);
        }
    }

    /// What the containers look like now: `Some(why)` if any is bad.
    pub fn evidence(&mut self, now: Instant, bad: Option<String>) {
        match &bad {
            Some(_) => {
                self.good_since = None;
                if self.judged {
                    self.bad_since.get_or_insert(now);
                }
            }
            None => {
                self.good_since.get_or_insert(now);
            }
        }
        self.bad = bad;
    }

    /// When `poll` may have something to say.
    pub fn deadline(&self) -> Option<Instant> {
        let fail_at = self
            .bad_since
            .filter(|_| !self.failed)
            .map(|since| since + self.grace);
        let clear_at = self
            .good_since
            .filter(|_| self.failed || self.bad_since.is_some())
            .map(|since| since + self.grace);
        match (fail_at, clear_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The verdict, when it changed.
    pub fn poll(&mut self, now: Instant) -> Option<Judgement> {
        if let Some(since) = self.good_since {
            if now >= since + self.grace {
                self.bad_since = None;
                if self.failed {
                    self.failed = false;
                    return Some(Judgement {
                        healthy: true,
                        detail: format!("healthy for {:?}", self.grace),
                    });
                }
            }
        }
        if let Some(since) = self.bad_since {
            if !self.failed && now >= since + self.grace {
                self.failed = true;
                let why = self.bad.clone().unwrap_or_else(|| {
                    "kept failing (restarted, not healthy for long)".to_string()
                });
                return Some(Judgement {
                    healthy: false,
                    detail: format!("{why}; bad for {:?}", now.saturating_duration_since(since)),
                });
            }
        }
        None
    }
}

/// One watched container as Docker last showed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub name: String,
    /// `Some(why)` when it is not running, or running but not healthy.
    pub bad: Option<String>,
}

/// The word for a container's state: running (and healthy, if it has a
/// healthcheck) is good; anything else is bad, and says why.
pub fn judge_state(
    running: bool,
    paused: bool,
    health: Option<HealthStatusEnum>,
    exit_code: Option<i64>,
    oom_killed: bool,
) -> Option<String> {
    if !running {
        return Some(match (oom_killed, exit_code) {
            (true, _) => "killed for want of memory (OOM)".to_string(),
            (false, Some(code)) => format!("not running (exit code {code})"),
            (false, None) => "not running".to_string(),
        });
    }
    if paused {
        return Some("paused".to_string());
    }
    match health {
        Some(HealthStatusEnum::UNHEALTHY) => Some("unhealthy (its healthcheck fails)".to_string()),
        Some(HealthStatusEnum::STARTING) => Some("health starting".to_string()),
        _ => None,
    }
}

/// The watched set's evidence: the first bad container says why; a target
/// that matches nothing is bad too.
pub fn evidence_of(target: &ContainerTarget, seen: &BTreeMap<String, Seen>) -> Option<String> {
    if seen.is_empty() {
        return Some(match target {
            ContainerTarget::Name(name) => format!("no container `{name}`"),
            ContainerTarget::Label(label) => format!("no container labelled {label}"),
        });
    }
    seen.values()
        .find_map(|s| s.bad.as_ref().map(|why| format!("{}: {why}", s.name)))
}

/// Whether the tracker is judged now: always, or while this node's master
/// stack is in force.
pub fn judged(track: &ContainerTrack, instance: &str, view: &StackView) -> bool {
    track.always || view.master_here(instance)
}

/// The events of the watched containers: the events API names a
/// container exactly (`container=`), the listing by a pattern (`name=`).
fn event_filters(target: &ContainerTarget) -> HashMap<String, Vec<String>> {
    let mut filters = HashMap::new();
    filters.insert("type".to_string(), vec!["container".to_string()]);
    // Not exec_*: a healthcheck runs one every interval.
    let actions = [
        "create",
        "start",
        "restart",
        "die",
        "oom",
        "kill",
        "stop",
        "pause",
        "unpause",
        "health_status",
        "destroy",
        "rename",
    ];
    filters.insert(
        "event".to_string(),
        actions.iter().map(|a| a.to_string()).collect(),
    );
    match target {
        ContainerTarget::Name(name) => filters.insert("container".to_string(), vec![name.clone()]),
        ContainerTarget::Label(label) => filters.insert("label".to_string(), vec![label.clone()]),
    };
    filters
}

fn filters(target: &ContainerTarget) -> HashMap<String, Vec<String>> {
    let mut filters = HashMap::new();
    match target {
        ContainerTarget::Name(name) => {
            filters.insert("name".to_string(), vec![format!("^/?{name}$")]);
        }
        ContainerTarget::Label(label) => {
            filters.insert("label".to_string(), vec![label.clone()]);
        }
    }
    filters
}

/// Every watched container, as Docker shows it now.
async fn look(docker: &Docker, target: &ContainerTarget) -> Result<BTreeMap<String, Seen>, String> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters(target)),
        ..Default::default()
    };
    let listed = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| format!("listing containers: {e}"))?;
    let mut seen = BTreeMap::new();
    for container in listed {
        let Some(id) = container.id else { continue };
        if let Some(one) = inspect(docker, &id).await? {
            seen.insert(id, one);
        }
    }
    Ok(seen)
}

/// How many containers `track` names exist (check-config); `Err` when
/// Docker does not answer.
pub async fn count_matching(track: &ContainerTrack) -> Result<usize, String> {
    let socket = track.docker_socket.display().to_string();
    let docker = Docker::connect_with_unix(&socket, 5, bollard::API_DEFAULT_VERSION)
        .map_err(|e| format!("{socket}: {e}"))?;
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters(&track.target)),
        ..Default::default()
    };
    docker
        .list_containers(Some(options))
        .await
        .map(|listed| listed.len())
        .map_err(|e| format!("Docker does not answer on {socket}: {e}"))
}

/// One container now; `None` once it is gone.
async fn inspect(docker: &Docker, id: &str) -> Result<Option<Seen>, String> {
    match docker.inspect_container(id, None).await {
        Ok(inspect) => {
            let state = inspect.state.unwrap_or_default();
            Ok(Some(Seen {
                name: inspect
                    .name
                    .unwrap_or_else(|| id.to_string())
                    .trim_start_matches('/')
                    .to_string(),
                bad: judge_state(
                    state.running.unwrap_or(false),
                    state.paused.unwrap_or(false),
                    state.health.and_then(|h| h.status),
                    state.exit_code,
                    state.oom_killed.unwrap_or(false),
                ),
            }))
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(None),
        Err(e) => Err(format!("inspecting {id}: {e}")),
    }
}

/// Watches `track` forever: Docker's events for its containers, the stack
/// view for whether it is judged, the spell's deadline. A lost Docker is
/// reported (degraded), not judged, and tried again every second.
pub async fn watch(
    instance: String,
    name: String,
    track: ContainerTrack,
    mut view: tokio::sync::watch::Receiver<StackView>,
    report: impl Fn(Observation),
) {
    let mut spell = Spell::new(track.grace);
    let mut degraded_since: Option<String> = None;
    loop {
        let lost_because = match follow(
            &track,
            &mut spell,
            &mut view,
            &mut degraded_since,
            &instance,
            &name,
            &report,
        )
        .await
        {
            Some(why) => why,
            None => return, // the daemon is stopping
        };
        lost(
            &instance,
            &name,
            &mut spell,
            &mut degraded_since,
            lost_because,
            &report,
        );
        tokio::time::sleep(RECONNECT_EVERY).await;
    }
}

/// One connection to Docker, followed until it is lost (`Some(why)`) or
/// the daemon stops (`None`).
async fn follow(
    track: &ContainerTrack,
    spell: &mut Spell,
    view: &mut tokio::sync::watch::Receiver<StackView>,
    degraded_since: &mut Option<String>,
    instance: &str,
    name: &str,
    report: &impl Fn(Observation),
) -> Option<String> {
    let socket = track.docker_socket.display().to_string();
    let docker = match Docker::connect_with_unix(&socket, 30, bollard::API_DEFAULT_VERSION) {
        Ok(docker) => docker,
        Err(e) => return Some(format!("{socket}: {e}")),
    };
    // Subscribe first, then look: a change between the two is in the
    // stream, not lost.
    let mut events = docker.events(Some(EventsOptions {
        filters: Some(event_filters(&track.target)),
        ..Default::default()
    }));
    let mut seen = match look(&docker, &track.target).await {
        Ok(seen) => seen,
        Err(e) => return Some(e),
    };
    if let Some(was) = degraded_since.take() {
        tracing::info!(%instance, tracker = %name, "track container: Docker answers again (was: {was})");
    }
    let now = Instant::now();
    spell.evidence(now, evidence_of(&track.target, &seen));
    spell.judge(now, judged(track, instance, &view.borrow_and_update()));
    report(Observation::Degraded { degraded: None });
    loop {
        if let Some(judgement) = spell.poll(Instant::now()) {
            report(Observation::Service {
                healthy: judgement.healthy,
                detail: judgement.detail,
            });
        }
        let deadline = spell.deadline();
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(message)) => {
                    let Some(id) = message.actor.and_then(|a| a.id) else { continue };
                    match inspect(&docker, &id).await {
                        Ok(Some(one)) => { seen.insert(id, one); }
                        Ok(None) => { seen.remove(&id); }
                        Err(e) => return Some(e),
                    }
                    spell.evidence(Instant::now(), evidence_of(&track.target, &seen));
                }
                Some(Err(e)) => return Some(format!("Docker events: {e}")),
                None => return Some("Docker closed the events stream".to_string()),
            },
            changed = view.changed() => {
                changed.ok()?;
                spell.judge(Instant::now(), judged(track, instance, &view.borrow_and_update()));
            }
            _ = sleep_until(deadline) => {}
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Docker cannot be asked: the tracker keeps its verdict, is not judged
/// (nothing moves on Docker's absence alone), and says so once.
fn lost(
    instance: &str,
    name: &str,
    spell: &mut Spell,
    degraded_since: &mut Option<String>,
    why: String,
    report: &impl Fn(Observation),
) {
    spell.judge(Instant::now(), false);
    if degraded_since.is_none() {
        tracing::warn!(%instance, tracker = %name, "track container degraded: {why}; its verdict holds, nothing moves until Docker answers");
        report(Observation::Degraded {
            degraded: Some(why.clone()),
        });
    }
    *degraded_since = Some(why);
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);

    fn at(base: Instant, seconds: u64) -> Instant {
        base + Duration::from_secs(seconds)
    }

    fn bad() -> Option<String> {
        Some("not running (exit code 137)".to_string())
    }

    #[test]
    fn bad_evidence_counts_only_while_judged_and_only_after_the_grace() {
        let t0 = Instant::now();
        let mut spell = Spell::new(GRACE);
        // A backup: the master stack is stopped on purpose.
        spell.evidence(t0, bad());
        assert_eq!(spell.deadline(), None);
        assert_eq!(spell.poll(at(t0, 100)), None);
        // Promoted; the container is still down when judging begins.
        spell.judge(at(t0, 100), true);
        assert_eq!(spell.deadline(), Some(at(t0, 110)));
        assert_eq!(spell.poll(at(t0, 109)), None);
        let judgement = spell.poll(at(t0, 110)).expect("failed after the grace");
        assert!(!judgement.healthy);
        assert!(judgement.detail.contains("exit code 137"), "{judgement:?}");
        assert_eq!(spell.poll(at(t0, 111)), None, "said once");
    }

    #[test]
    fn a_crash_loop_faster_than_the_grace_is_one_spell() {
        let t0 = Instant::now();
        let mut spell = Spell::new(GRACE);
        spell.judge(t0, true);
        spell.evidence(t0, None);
        // Dies, restarts 2 s later, dies 3 s after that, ...
        for (died, restarted) in [(1, 3), (6, 8)] {
            spell.evidence(at(t0, died), bad());
            assert_eq!(spell.poll(at(t0, died)), None);
            spell.evidence(at(t0, restarted), None);
            assert_eq!(spell.poll(at(t0, restarted)), None);
        }
        // Running since 8 s, but the spell that began at 1 s never ended.
        let judgement = spell.poll(at(t0, 11)).expect("failed");
        assert!(!judgement.healthy);
        // Healthy for the grace: healed.
        assert_eq!(spell.poll(at(t0, 17)), None);
        assert!(spell.poll(at(t0, 18)).expect("healed").healthy);
    }

    #[test]
    fn a_short_blip_heals_without_a_verdict() {
        let t0 = Instant::now();
        let mut spell = Spell::new(GRACE);
        spell.judge(t0, true);
        spell.evidence(at(t0, 1), Some("unhealthy (its healthcheck fails)".into()));
        spell.evidence(at(t0, 4), None);
        // Good for the grace: the spell is over, nothing was said.
        assert_eq!(spell.poll(at(t0, 14)), None);
        assert_eq!(spell.deadline(), None);
        assert!(!spell.failed());
    }

    #[test]
    fn a_failed_tracker_stays_failed_when_no_longer_judged() {
        let t0 = Instant::now();
        let mut spell = Spell::new(GRACE);
        spell.judge(t0, true);
        spell.evidence(t0, bad());
        assert!(!spell.poll(at(t0, 10)).unwrap().healthy);
        // Demoted: the stack is stopped; still bad evidence, not judged.
        spell.judge(at(t0, 12), false);
        assert_eq!(spell.poll(at(t0, 500)), None);
        assert!(spell.failed(), "no preempting back into a dead service");
        // The operator has it healthy again, on the backup: healed.
        spell.evidence(at(t0, 600), None);
        assert!(spell.poll(at(t0, 610)).unwrap().healthy);
    }

    #[test]
    fn docker_s_absence_suspends_judging() {
        let t0 = Instant::now();
        let mut spell = Spell::new(GRACE);
        spell.judge(t0, true);
        spell.evidence(t0, bad());
        // Docker lost at 5 s: the spell stops counting.
        spell.judge(at(t0, 5), false);
        assert_eq!(spell.poll(at(t0, 60)), None);
        // Back at 60 s, still bad: a new spell from then.
        spell.judge(at(t0, 60), true);
        assert_eq!(spell.poll(at(t0, 69)), None);
        assert!(!spell.poll(at(t0, 70)).unwrap().healthy);
    }

    #[test]
    fn states_in_words() {
        assert_eq!(judge_state(true, false, None, None, false), None);
        assert_eq!(
            judge_state(true, false, Some(HealthStatusEnum::HEALTHY), None, false),
            None
        );
        assert_eq!(
            judge_state(true, false, Some(HealthStatusEnum::UNHEALTHY), None, false).as_deref(),
            Some("unhealthy (its healthcheck fails)")
        );
        assert_eq!(
            judge_state(false, false, None, Some(137), true).as_deref(),
            Some("killed for want of memory (OOM)")
        );
        assert_eq!(
            judge_state(false, false, None, Some(1), false).as_deref(),
            Some("not running (exit code 1)")
        );
        let target = ContainerTarget::Label("com.wimark.stack=master".into());
        assert_eq!(
            evidence_of(&target, &BTreeMap::new()).as_deref(),
            Some("no container labelled com.wimark.stack=master")
        );
        let mut seen = BTreeMap::new();
        seen.insert(
            "a".into(),
            Seen {
                name: "mongo".into(),
                bad: None,
            },
        );
        seen.insert(
            "b".into(),
            Seen {
                name: "mqtt".into(),
                bad: Some("paused".into()),
            },
        );
        assert_eq!(evidence_of(&target, &seen).as_deref(), Some("mqtt: paused"));
    }
}
