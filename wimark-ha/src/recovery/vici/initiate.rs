//! The adapter's conversation with charon: every AP's connection loaded
//! and initiated without waiting (`initiate` with `timeout = -1`, so no
//! request holds one of charon's worker threads), and how each ended read
//! from one event subscription (`ike-updown`, `child-updown`, and `alert`
//! where charon has it) by [`Inflight`].
//!
//! Cost: three vici requests per AP (load, initiate, unload) spread over
//! [`REQUEST_CONNECTIONS`] connections, two or three events per AP, and at
//! most `in_flight` APs waiting at once; memory O(in_flight) besides the
//! outcomes.
//!
//! Owns: the vici connections of one run. Must not: retry an AP (one
//! attempt per takeover), or let an AP go unreported.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::{
    connection_name,
    inflight::{Alert, Done, Ending, Event, Inflight, Updown},
    ports_for,
    report::Reporter,
    IkeConfig,
};
use crate::recovery::{ApEntry, ApList, ApOutcome, ApResult};

/// vici connections that carry the requests (a connection carries one
/// request at a time; with nothing waiting in charon each takes well under
/// a millisecond, so a few keep charon's queue fed).
pub const REQUEST_CONNECTIONS: usize = 4;
/// One `unload-conn` must be answered within this.
const UNLOAD_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Deserialize)]
struct Answer {
    success: bool,
    #[serde(default)]
    errmsg: Option<String>,
}

#[derive(Serialize)]
struct Initiate<'a> {
    child: &'a str,
    ike: &'a str,
    /// -1: charon queues the initiation and answers at once; the outcome
    /// comes as events.
    timeout: i64,
    /// The AP must not be refused by charon's half-open limits: the
    /// adapter bounds what it has in flight itself.
    #[serde(rename = "init-limits")]
    init_limits: bool,
}

#[derive(Serialize)]
struct Unload<'a> {
    name: &'a str,
}

/// What the run's tasks tell the one loop that decides, in the order it
/// happened (one channel, so that an AP's start is always read before the
/// events its initiation causes).
enum Note {
    Started {
        index: usize,
        name: String,
        permit: OwnedSemaphorePermit,
    },
    Refused {
        name: String,
        why: String,
    },
    Event(Event),
    /// The event subscription ended: no outcome can arrive any more.
    EventsLost(String),
}

/// Connects to vici. charon's listen backlog is short: a connection
/// refused with EAGAIN is tried again until `deadline`.
async fn connect(path: &Path, deadline: Instant) -> Result<rsvici::Client, String> {
    loop {
        match rsvici::unix::connect(path).await {
            Ok(client) => return Ok(client),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => return Err(format!("vici {}: {e}", path.display())),
        }
    }
}

/// `connections.<name>` for one AP: the template with its address, ports
/// and identity.
fn connection_for(config: &IkeConfig, entry: &ApEntry, address: std::net::IpAddr) -> toml::Table {
    let mut connection = config.connection.clone();
    connection.insert(
        "remote_addrs".to_string(),
        toml::Value::Array(vec![toml::Value::String(address.to_string())]),
    );
    for (key, port) in ports_for(entry.ike_port) {
        connection.insert(key.to_string(), toml::Value::Integer(port.into()));
    }
    // charon sends INITIAL_CONTACT, which makes the AP drop its stale SA,
    // only to a known identity (never to %any): unless the template names
    // one, the AP's identity as the list gives it, else its address
    // (strongSwan's default identity for PSK peers — not behind a NAT,
    // where the AP's own is its private address).
    if let Some(toml::Value::Table(remote)) = connection.get_mut("remote") {
        let id = entry.ike_id.clone().unwrap_or_else(|| address.to_string());
        remote.entry("id").or_insert_with(|| toml::Value::String(id));
    }
    connection
}

/// One AP to initiate.
struct Work {
    index: usize,
    name: String,
    connection: toml::Table,
    /// IKE_SAs this node still holds under the name (unique ids), from an
    /// earlier term: charon would reuse one of them (`reuse_ikesa`, on by
    /// default) instead of starting a new IKE_SA with INITIAL_CONTACT, and
    /// the AP forgot it when the peer took over — the initiation would go
    /// nowhere. Destroyed first.
    stale: Vec<u32>,
}

#[derive(Serialize)]
struct Terminate {
    #[serde(rename = "ike-id")]
    ike_id: u32,
    /// Destroyed at once, without waiting for the AP's answer to the
    /// DELETE (it no longer knows the SA).
    force: bool,
    timeout: i64,
}

/// Destroys one stale IKE_SA (see [`Work::stale`]); a failure leaves it,
/// and the initiation may then reuse it and time out (reported).
async fn remove_stale(client: &mut rsvici::Client, id: u32) {
    let request = client.request::<_, Answer>(
        "terminate",
        Terminate {
            ike_id: id,
            force: true,
            timeout: 500,
        },
    );
    let _ = tokio::time::timeout(UNLOAD_TIMEOUT, request).await;
}

#[derive(Serialize)]
struct ListSas {
    noblock: bool,
}

#[derive(Deserialize)]
struct ListedId {
    #[serde(default)]
    uniqueid: String,
}

/// The unique ids of the IKE_SAs charon lists under each name in `names`.
async fn stale_sas(
    client: &mut rsvici::Client,
    names: &HashMap<String, usize>,
) -> Result<HashMap<String, Vec<u32>>, String> {
    let mut found: HashMap<String, Vec<u32>> = HashMap::new();
    let mut events = Box::pin(client.stream_request::<_, HashMap<String, ListedId>>(
        "list-sas",
        "list-sa",
        ListSas { noblock: true },
    ));
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| format!("vici list-sas: {e}"))?;
        for (name, sa) in event {
            if let (true, Ok(id)) = (names.contains_key(&name), sa.uniqueid.parse()) {
                found.entry(name).or_default().push(id);
            }
        }
    }
    Ok(found)
}

/// Loads the AP's connection and initiates it without waiting.
async fn launch(
    config: &IkeConfig,
    client: &mut rsvici::Client,
    name: &str,
    connection: toml::Table,
) -> Result<(), String> {
    let mut message = toml::Table::new();
    message.insert(name.to_string(), toml::Value::Table(connection));
    let loaded: Answer = client
        .request("load-conn", &message)
        .await
        .map_err(|e| format!("vici load-conn: {e}"))?;
    if !loaded.success {
        return Err(format!(
            "load-conn refused: {}",
            loaded.errmsg.unwrap_or_default()
        ));
    }
    let initiated: Answer = client
        .request(
            "initiate",
            Initiate {
                child: &config.child,
                ike: name,
                timeout: -1,
                init_limits: false,
            },
        )
        .await
        .map_err(|e| format!("vici initiate: {e}"))?;
    if initiated.success {
        Ok(())
    } else {
        Err(format!(
            "initiate refused: {}",
            initiated
                .errmsg
                .unwrap_or_else(|| "no reason given".to_string())
        ))
    }
}

/// One request connection's loop: take the next AP when the window has
/// room, say it started, load and initiate it.
async fn launcher(
    config: &IkeConfig,
    mut client: rsvici::Client,
    queue: &Mutex<std::vec::IntoIter<Work>>,
    window: Arc<Semaphore>,
    notes: mpsc::UnboundedSender<Note>,
) {
    loop {
        let Ok(permit) = window.clone().acquire_owned().await else {
            return;
        };
        let next = queue.lock().ok().and_then(|mut q| q.next());
        let Some(Work {
            index,
            name,
            connection,
            stale,
        }) = next
        else {
            return;
        };
        let _ = notes.send(Note::Started {
            index,
            name: name.clone(),
            permit,
        });
        for id in stale {
            remove_stale(&mut client, id).await;
        }
        if let Err(why) = launch(config, &mut client, &name, connection).await {
            let _ = notes.send(Note::Refused { name, why });
        }
    }
}

/// Subscribes `client` to the events the outcomes are read from, says
/// when the subscriptions are in place, and forwards every event at once:
/// rsvici's listener waits on a full event channel, and a slow reader
/// would stall every reply on that connection.
async fn forward_events(
    mut client: rsvici::Client,
    notes: mpsc::UnboundedSender<Note>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let ike = client.subscribe::<Updown>("ike-updown");
    let child = client.subscribe::<Updown>("child-updown");
    // strongSwan 6.0.3 and later; an older charon refuses the
    // registration, which ends only this stream.
    let alert = client.subscribe::<Alert>("alert");
    let ike = ike.map(|e| e.map(Event::IkeUpdown)).boxed();
    let child = child.map(|e| e.map(Event::ChildUpdown)).boxed();
    let alert = alert
        .map(|e| e.map(Event::Alert))
        .take_while(|e| std::future::ready(e.is_ok()))
        .boxed();
    let mut events = futures_util::stream::select_all([ike, child, alert]);
    // The first poll sends the three registrations; a request sent after
    // them on the same connection is answered by charon after it has
    // handled them (one client's messages in order), so no AP is initiated
    // before its events can arrive.
    let first = futures_util::poll!(events.next());
    #[derive(Deserialize)]
    struct Version {}
    let _: Result<Version, _> = client.request("version", ()).await;
    let _ = ready.send(());
    if let std::task::Poll::Ready(first) = first {
        if !forward(first, &notes) {
            return;
        }
    }
    loop {
        if !forward(events.next().await, &notes) {
            return;
        }
    }
}

/// Passes one event on; false when the subscription is over.
fn forward(event: Option<Result<Event, rsvici::Error>>, notes: &mpsc::UnboundedSender<Note>) -> bool {
    let lost = match event {
        Some(Ok(event)) => return notes.send(Note::Event(event)).is_ok(),
        Some(Err(e)) => format!("vici events: {e}"),
        None => "vici events ended".to_string(),
    };
    let _ = notes.send(Note::EventsLost(lost));
    false
}

fn failed(entry: &ApEntry, why: String, took: Duration) -> ApOutcome {
    ApOutcome {
        address: entry.address.clone(),
        ok: false,
        took_ms: took.as_secs_f64() * 1e3,
        error: Some(why),
        result: Some(ApResult::Failed),
    }
}

fn outcome_of(entry: &ApEntry, done: &Done) -> ApOutcome {
    let (result, error) = match &done.ending {
        Ending::Up => (ApResult::Ok, None),
        Ending::Failed(why) => (ApResult::Failed, Some(why.clone())),
        Ending::TimedOut(why) => (ApResult::TimedOut, Some(why.clone())),
    };
    ApOutcome {
        address: entry.address.clone(),
        ok: result == ApResult::Ok,
        took_ms: done.took.as_secs_f64() * 1e3,
        error,
        result: Some(result),
    }
}

/// Every AP of `list`, at most `config.in_flight` waiting at once; one
/// outcome per entry, in the list's order. Two entries with the same
/// connection name (the same address and port) are one initiation, both
/// reported. With `as_they_end`, the outcomes are also sent there, in the
/// list's order, each as soon as it and all before it are known (a caller
/// killed part way has said how far it got; an AP holds those after it
/// back for its `timeout` at most).
pub async fn initiate_all(
    config: &IkeConfig,
    list: &ApList,
    as_they_end: Option<&mpsc::UnboundedSender<ApOutcome>>,
) -> Vec<ApOutcome> {
    let mut report = Reporter::new(as_they_end, list.aps.len());
    let outcomes = initiate_each(config, list, &mut report).await;
    for (index, outcome) in outcomes.iter().enumerate() {
        report.send(index, outcome);
    }
    outcomes
}

async fn initiate_each(config: &IkeConfig, list: &ApList, report: &mut Reporter<'_>) -> Vec<ApOutcome> {
    let started = Instant::now();
    let connect_deadline = started + config.timeout;
    // An IKE daemon that is down fails every AP the same way: say so once
    // each, at once, instead of waiting out a timeout per AP.
    let events_client = match connect(&config.vici, connect_deadline).await {
        Ok(client) => client,
        Err(e) => {
            return list
                .aps
                .iter()
                .map(|entry| failed(entry, e.clone(), started.elapsed()))
                .collect()
        }
    };
    let mut outcomes: Vec<Option<ApOutcome>> = vec![None; list.aps.len()];
    // One initiation per connection name; later entries with the same
    // name take its outcome.
    let mut first_of_name: HashMap<String, usize> = HashMap::new();
    let mut same_as: Vec<(usize, usize)> = Vec::new();
    let mut work = Vec::new();
    for (index, entry) in list.aps.iter().enumerate() {
        let address = match entry.ip() {
            Ok(address) => address,
            Err(e) => {
                let outcome = failed(entry, e, Duration::ZERO);
                report.send(index, &outcome);
                outcomes[index] = Some(outcome);
                continue;
            }
        };
        let name = connection_name(&address, entry.ike_port);
        if let Some(first) = first_of_name.get(&name) {
            same_as.push((index, *first));
            report.copy_of(index, *first, entry.address.clone());
            continue;
        }
        first_of_name.insert(name.clone(), index);
        work.push(Work {
            index,
            name,
            connection: connection_for(config, entry, address),
            stale: Vec::new(),
        });
    }
    // One listing of what this node still holds (bounded: a charon too busy
    // to list is not waited for, and nothing is destroyed).
    let mut events_client = events_client;
    if let Ok(Ok(mut stale)) =
        tokio::time::timeout(config.timeout, stale_sas(&mut events_client, &first_of_name)).await
    {
        for item in &mut work {
            item.stale = stale.remove(&item.name).unwrap_or_default();
        }
    }

    let (notes_tx, mut notes) = mpsc::unbounded_channel();
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let events_task = tokio::spawn(forward_events(events_client, notes_tx.clone(), ready_tx));
    // The subscriptions must be in place before the first initiation, or
    // a fast AP's events would be missed.
    let _ = tokio::time::timeout(config.timeout, ready).await;

    let window = Arc::new(Semaphore::new(config.in_flight));
    let queue = Mutex::new(work.into_iter());
    let mut launchers = Vec::new();
    for _ in 0..REQUEST_CONNECTIONS.min(first_of_name.len().max(1)) {
        match connect(&config.vici, connect_deadline).await {
            Ok(client) => launchers.push(client),
            Err(_) => break,
        }
    }
    if launchers.is_empty() {
        events_task.abort();
        let why = "vici: no connection for the requests could be opened";
        return list
            .aps
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                outcomes[i]
                    .clone()
                    .unwrap_or_else(|| failed(entry, why.to_string(), started.elapsed()))
            })
            .collect();
    }
    let to_end = first_of_name.len();
    let launching = futures_util::future::join_all(launchers.into_iter().map(|client| {
        launcher(config, client, &queue, window.clone(), notes_tx.clone())
    }));
    drop(notes_tx);
    let (unload_tx, unload_rx) = mpsc::unbounded_channel::<String>();
    let unloading = unload(&config.vici, connect_deadline, unload_rx);

    let mut inflight = Inflight::new(&config.child, config.timeout);
    let mut permits: HashMap<usize, OwnedSemaphorePermit> = HashMap::new();
    let mut ended = 0;
    let decide = async {
        while ended < to_end {
            let deadline = inflight
                .next_deadline()
                .map(tokio::time::Instant::from_std);
            let note = tokio::select! {
                note = notes.recv() => note,
                _ = async {
                    match deadline {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let done = inflight.expire(Instant::now());
                    ended += finish(done, list, &mut outcomes, &mut permits, &unload_tx, report);
                    continue;
                }
            };
            let now = Instant::now();
            let done = match note {
                Some(Note::Started {
                    index,
                    name,
                    permit,
                }) => {
                    inflight.started(index, &name, now);
                    permits.insert(index, permit);
                    Vec::new()
                }
                Some(Note::Refused { name, why }) => inflight.refused(&name, why, now).into_iter().collect(),
                Some(Note::Event(event)) => inflight.on_event(&event, now),
                Some(Note::EventsLost(why)) => {
                    // Nothing more can end an AP but its deadline: stop
                    // starting new ones and fail what waits.
                    window.close();
                    let mut done = inflight.fail_all(&why, now);
                    done.extend(fail_unstarted(&queue, &why));
                    done
                }
                None => {
                    // Every task is gone and nothing can arrive any more:
                    // whatever waits or is queued ends now.
                    let why = "the adapter's vici connections closed";
                    let mut done = inflight.fail_all(why, now);
                    done.extend(fail_unstarted(&queue, why));
                    finish(done, list, &mut outcomes, &mut permits, &unload_tx, report);
                    break;
                }
            };
            ended += finish(done, list, &mut outcomes, &mut permits, &unload_tx, report);
        }
        drop(unload_tx);
    };
    let ((), _, ()) = tokio::join!(decide, launching, unloading);
    events_task.abort();
    for (index, first) in same_as {
        outcomes[index] = outcomes[first].clone().map(|mut o| {
            o.address = list.aps[index].address.clone();
            o
        });
    }
    list.aps
        .iter()
        .zip(outcomes)
        .map(|(entry, outcome)| {
            outcome.unwrap_or_else(|| {
                failed(entry, "not initiated (the adapter stopped)".to_string(), started.elapsed())
            })
        })
        .collect()
}

/// The APs still queued when the events were lost, failed with `why`.
fn fail_unstarted(queue: &Mutex<std::vec::IntoIter<Work>>, why: &str) -> Vec<Done> {
    let Ok(mut queue) = queue.lock() else {
        return Vec::new();
    };
    queue
        .by_ref()
        .map(|Work { index, name, .. }| Done {
            index,
            name,
            ending: Ending::Failed(why.to_string()),
            took: Duration::ZERO,
        })
        .collect()
}

/// Records what ended, frees its place in the window, queues its unload.
fn finish(
    done: Vec<Done>,
    list: &ApList,
    outcomes: &mut [Option<ApOutcome>],
    permits: &mut HashMap<usize, OwnedSemaphorePermit>,
    unload: &mpsc::UnboundedSender<String>,
    report: &mut Reporter<'_>,
) -> usize {
    let count = done.len();
    for done in done {
        permits.remove(&done.index);
        let outcome = outcome_of(&list.aps[done.index], &done);
        report.send(done.index, &outcome);
        outcomes[done.index] = Some(outcome);
        let _ = unload.send(done.name);
    }
    count
}

/// Unloads each AP's connection once it has ended (an established SA keeps
/// what it needs), on a connection of its own; leaves no per-AP config
/// behind.
async fn unload(path: &Path, deadline: Instant, mut names: mpsc::UnboundedReceiver<String>) {
    let mut client = connect(path, deadline).await.ok();
    while let Some(name) = names.recv().await {
        let Some(connection) = client.as_mut() else {
            continue;
        };
        let request = connection.request::<_, Answer>("unload-conn", Unload { name: &name });
        // A charon that stops answering is not waited for per AP: the
        // remaining names are left (charon drops them with its config on
        // restart).
        if tokio::time::timeout(UNLOAD_TIMEOUT, request).await.is_err() {
            client = None;
        }
    }
}
