//! The quorum witness: a key in etcd that the node running the master
//! stack holds under a lease it keeps alive. Two nodes cannot tell a dead
//! peer from a cut network; etcd is the third vote. The VIP moves as
//! before (the fast path never waits for the witness); the containers are
//! promoted only once the key is ours, which needs the old holder's lease
//! to expire or be released.
//!
//! Owns: the etcd session (client, lease, keep-alives), claiming and
//! releasing the key, and the witness status. Must not: touch the VIP,
//! the VRRP state or the containers (the role switcher asks before a
//! promotion and tells after a demotion).

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, Identity, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchStream,
};

use crate::{clock::unix_ms, config::WitnessConfig, records::WitnessStatus};

pub mod claim;
pub mod probe;

use claim::{holder, Claim, Holder, LeaseClock};

/// A waiting promotion watches the key: the old holder's release, or its
/// lease expiring (etcd deletes the key), wakes it within a round trip.
/// Without a watch (not made, or broken) it asks again this often.
const CLAIM_POLL: Duration = Duration::from_millis(100);
/// With a watch, it still asks this often: a watch stuck on a member that
/// froze never reports, and the claim itself finds another member.
const CLAIM_POLL_WATCHED: Duration = Duration::from_millis(500);

/// Why the key is not ours (yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessError {
    #[error("etcd unreachable at {endpoints}: {detail}")]
    Unreachable { endpoints: String, detail: String },
    #[error("etcd refused our credentials: {0}")]
    Refused(String),
    /// The TLS handshake failed: etcd answers, but one side does not trust
    /// the other (or one speaks TLS and the other does not).
    #[error("TLS with etcd at {endpoints} failed: {hint} ({detail})")]
    Tls {
        endpoints: String,
        hint: &'static str,
        detail: String,
    },
    /// With what keeps it from being granted or renewed, when known.
    #[error("no lease: {0}")]
    NoLease(String),
    #[error("the key is held by {0}, waiting for its lease to expire or be released")]
    HeldByPeer(String),
    /// Our own node's claim under a lease we no longer hold (a restart, a
    /// lease that ran out while etcd was away): it expires by itself.
    #[error(
        "the key still holds this node's claim under an older lease, waiting for it to expire"
    )]
    OwnStaleClaim,
    #[error("the key is held by a foreign writer ({0}); it is never taken over: remove it, or give this pair another key")]
    Foreign(String),
}

struct Session {
    client: Client,
    lease: Option<LeaseClock>,
    keep_alive: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    /// A renewal failed: connect again before the next one (the member
    /// this client reached may be the one that is gone).
    reconnect: bool,
}

pub struct Witness {
    config: WitnessConfig,
    /// The peer's addresses, probed by the isolation rule.
    peers: Vec<std::net::IpAddr>,
    status: Mutex<WitnessStatus>,
    session: tokio::sync::Mutex<Option<Session>>,
    /// True while our lease is not confirmed and has half its TTL or less
    /// left (or is gone): the isolation rule's trigger.
    at_risk: tokio::sync::watch::Sender<bool>,
    /// Our lease's local deadline (see `LeaseClock`), for the isolation
    /// rule's stop budget.
    deadline: Mutex<Option<Instant>>,
    /// What the key itself says against us (a foreign writer), apart from
    /// the session's problems, which every good renewal clears.
    key_problem: Mutex<Option<String>>,
    /// A claim was sent and its answer never read (the wait for the key was
    /// interrupted): etcd may have put the key under our lease, so the next
    /// release deletes it if so rather than trust `holds_key`.
    claim_unsettled: AtomicBool,
}

/// Marks a claim in flight until its answer is read (see `claim_unsettled`).
struct ClaimInFlight<'a> {
    witness: &'a Witness,
    answered: bool,
}

impl Drop for ClaimInFlight<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.witness
                .claim_unsettled
                .store(true, Ordering::SeqCst);
        }
    }
}

impl Witness {
    /// The witness, its lease kept alive by a task on the current runtime.
    pub fn start(config: WitnessConfig, peers: Vec<std::net::IpAddr>) -> Arc<Self> {
        let witness = Arc::new(Self {
            peers,
            at_risk: tokio::sync::watch::Sender::new(false),
            deadline: Mutex::new(None),
            key_problem: Mutex::new(None),
            claim_unsettled: AtomicBool::new(false),
            status: Mutex::new(WitnessStatus {
                endpoints: config.endpoints.clone(),
                key: config.key.clone(),
                node: config.node.clone(),
                ..Default::default()
            }),
            config,
            session: tokio::sync::Mutex::new(None),
        });
        tokio::spawn(witness.clone().keep_lease());
        witness
    }

    /// Watches whether our lease is at risk (see `at_risk`).
    pub fn at_risk(&self) -> tokio::sync::watch::Receiver<bool> {
        self.at_risk.subscribe()
    }

    /// How long our lease surely lives on at etcd (zero: it may be gone).
    pub fn lease_left(&self) -> Duration {
        self.deadline
            .lock()
            .ok()
            .and_then(|d| *d)
            .map_or(Duration::ZERO, |d| {
                d.saturating_duration_since(Instant::now())
            })
    }

    fn set_deadline(&self, lease: Option<LeaseClock>) {
        if let Ok(mut deadline) = self.deadline.lock() {
            *deadline = lease.map(|l| l.deadline());
        }
    }

    /// Whether the peer answers (`None`: it cannot be told, e.g. no pingable
    /// address of it is known): one ICMP echo round, a sixth of the TTL.
    pub async fn peer_answers(&self) -> Option<bool> {
        let timeout =
            (self.config.lease_ttl / 6).clamp(Duration::from_millis(100), Duration::from_secs(1));
        probe::peer_answers(self.peers.clone(), timeout).await
    }

    /// The isolation rule stopped (or restarted) the master stack here.
    pub fn set_isolated(&self, isolated: bool) {
        self.update(|s| s.isolated_since_unix_ms = isolated.then(unix_ms));
    }

    pub fn status(&self) -> WitnessStatus {
        let mut status = self.status.lock().map(|s| s.clone()).unwrap_or_default();
        // Past our lease's local deadline etcd has dropped the lease and
        // the key with it, whether or not the keeper has noticed yet (its
        // requests time out first).
        if self.lease_left().is_zero() {
            status.holds_lease = false;
            status.holds_key = false;
        }
        if let Some(key_problem) = self.key_problem.lock().ok().and_then(|k| k.clone()) {
            status.problem = Some(match status.problem {
                Some(session) => format!("{key_problem}; {session}"),
                None => key_problem,
            });
        }
        status
    }

    fn set_key_problem(&self, problem: Option<String>) {
        if let Ok(mut key_problem) = self.key_problem.lock() {
            *key_problem = problem;
        }
    }

    fn update(&self, change: impl FnOnce(&mut WitnessStatus)) {
        if let Ok(mut status) = self.status.lock() {
            change(&mut status);
        }
    }

    /// Waits until the key is ours; returns how long that took. Every
    /// change of the reason it waits is logged once and shown in status.
    pub async fn acquire(&self) -> Duration {
        let started = Instant::now();
        self.update(|s| s.waiting_since_unix_ms = Some(unix_ms()));
        let mut last_reason: Option<WitnessError> = None;
        let mut watch: Option<WatchStream> = None;
        loop {
            let (claimed, revision) = self.claim_at().await;
            match claimed {
                Ok(()) => {
                    self.set_key_problem(None);
                    let waited = started.elapsed();
                    self.update(|s| {
                        s.holds_key = true;
                        s.holder = None;
                        s.waiting_since_unix_ms = None;
                    });
                    tracing::info!(
                        key = %self.config.key,
                        waited_ms = waited.as_millis() as u64,
                        "witness key held: the master stack may run here"
                    );
                    return waited;
                }
                Err(reason) => {
                    self.update(|s| {
                        s.holds_key = false;
                        s.holder = match &reason {
                            WitnessError::HeldByPeer(node) => Some(node.clone()),
                            WitnessError::Foreign(what) => Some(format!("foreign writer {what}")),
                            _ => s.holder.take(),
                        };
                    });
                    // Held by the peer is no problem; no lease and an
                    // unreachable etcd are the session's, already shown.
                    match &reason {
                        WitnessError::Foreign(_) => self.set_key_problem(Some(reason.to_string())),
                        WitnessError::HeldByPeer(_) => self.set_key_problem(None),
                        _ => {}
                    }
                    if last_reason.as_ref() != Some(&reason) {
                        tracing::warn!(key = %self.config.key, "master stack held back: {reason}");
                        last_reason = Some(reason);
                    }
                }
            }
            if watch.is_none() {
                if let Some(revision) = revision {
                    watch = self.watch_key(revision).await;
                }
            }
            match watch.as_mut() {
                Some(stream) => {
                    tokio::select! {
                        message = stream.message() => {
                            // Any change of the key (released, expired,
                            // rewritten) is worth a claim; a watch that
                            // ended or broke is dropped and made again.
                            if !matches!(&message, Ok(Some(m)) if !m.canceled()) {
                                watch = None;
                            }
                        }
                        _ = tokio::time::sleep(CLAIM_POLL_WATCHED) => {}
                    }
                }
                None => tokio::time::sleep(CLAIM_POLL).await,
            }
        }
    }

    /// A watch of the key from just after `revision` (the store's revision
    /// the failed claim saw), so that a release in between is not missed;
    /// `None` when etcd would not make one (the poll stands in).
    async fn watch_key(&self, revision: i64) -> Option<WatchStream> {
        let mut client = self.session.lock().await.as_ref()?.client.clone();
        let options = WatchOptions::new().with_start_revision(revision + 1);
        match client.watch(self.config.key.as_bytes(), Some(options)).await {
            Ok(stream) => Some(stream),
            Err(e) => {
                tracing::debug!(key = %self.config.key, "watching the witness key: {e}");
                None
            }
        }
    }

    /// One claim, for a master stack that runs without the key (its lease
    /// ran out while etcd was away): `Ok` once the key is ours again.
    pub async fn reclaim(&self) -> Result<(), WitnessError> {
        let claimed = self.claim().await;
        if claimed.is_ok() {
            self.update(|s| {
                s.holds_key = true;
                s.holder = None;
            });
            tracing::info!(key = %self.config.key, "witness key claimed back");
        }
        claimed
    }

    /// A promotion stopped waiting (a newer state change came first).
    pub fn stop_waiting(&self) {
        self.set_key_problem(None);
        self.update(|s| s.waiting_since_unix_ms = None);
    }

    /// One attempt: put the key under our lease if nobody holds it.
    async fn claim(&self) -> Result<(), WitnessError> {
        self.claim_at().await.0
    }

    /// One attempt, and the store's revision it saw (`None`: no answer).
    /// The session lock is held only to copy the client and the lease: a
    /// renewal in flight never delays a claim.
    async fn claim_at(&self) -> (Result<(), WitnessError>, Option<i64>) {
        let no_lease = || {
            WitnessError::NoLease(
                self.status
                    .lock()
                    .ok()
                    .and_then(|s| s.problem.clone())
                    .unwrap_or_else(|| {
                        "etcd has not granted or renewed ours within its TTL".to_string()
                    }),
            )
        };
        let (mut client, lease) = {
            let guard = self.session.lock().await;
            let Some(session) = guard.as_ref() else {
                return (Err(no_lease()), None);
            };
            let Some(lease) = session.lease.filter(|l| l.alive_at(Instant::now())) else {
                return (Err(no_lease()), None);
            };
            (session.client.clone(), lease)
        };
        let key = self.config.key.as_bytes().to_vec();
        let value = Claim::new(&self.config.node, unix_ms()).encode();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                value,
                Some(PutOptions::new().with_lease(lease.id)),
            )])
            .or_else([TxnOp::get(key, None)]);
        let mut in_flight = ClaimInFlight {
            witness: self,
            answered: false,
        };
        let sent = client.txn(txn).await;
        in_flight.answered = true;
        let response = match sent {
            Ok(response) => response,
            Err(e) => return (Err(self.classify(e)), None),
        };
        self.update(|s| {
            s.reachable = true;
            s.problem = None;
        });
        let revision = response.header().map(|h| h.revision());
        if response.succeeded() {
            return (Ok(()), revision);
        }
        let current = response.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => get
                .kvs()
                .first()
                .map(|kv| (kv.value().to_vec(), kv.lease())),
            _ => None,
        });
        // Deleted between the compare and the get: try again at once.
        let Some((value, holder_lease)) = current else {
            return (
                Err(WitnessError::HeldByPeer("nobody (just released)".into())),
                revision,
            );
        };
        let verdict = match holder(&value, holder_lease, Some(lease.id)) {
            Holder::Us => Ok(()),
            Holder::Node(node) if node == self.config.node => Err(WitnessError::OwnStaleClaim),
            Holder::Node(node) => Err(WitnessError::HeldByPeer(node)),
            Holder::Foreign(what) => Err(WitnessError::Foreign(what)),
        };
        (verdict, revision)
    }

    /// Gives the key up (the master stack is stopped here): the peer's
    /// waiting promotion goes ahead at once, not after the TTL. Only the
    /// key under our own lease is deleted.
    pub async fn release(&self) {
        let unsettled = self
            .claim_unsettled
            .load(Ordering::SeqCst);
        if !self.status().holds_key && !unsettled {
            return;
        }
        let (mut client, lease) = {
            let guard = self.session.lock().await;
            let Some(session) = guard.as_ref() else {
                return;
            };
            let Some(lease) = session.lease else { return };
            (session.client.clone(), lease)
        };
        let key = self.config.key.as_bytes().to_vec();
        let txn = Txn::new()
            .when([Compare::lease(key.clone(), CompareOp::Equal, lease.id)])
            .and_then([TxnOp::delete(key, None)]);
        match client.txn(txn).await {
            Ok(response) => {
                self.update(|s| s.holds_key = false);
                self.claim_unsettled
                    .store(false, Ordering::SeqCst);
                if response.succeeded() {
                    tracing::info!(key = %self.config.key, "witness key released");
                }
            }
            Err(e) => {
                // Not released: it expires with the lease if this node
                // stops renewing; meanwhile the peer waits.
                tracing::warn!(key = %self.config.key, "releasing the witness key failed: {}", self.classify(e));
            }
        }
    }

    fn unreachable(&self, detail: &str) -> WitnessError {
        WitnessError::Unreachable {
            endpoints: self.config.endpoints.join(", "),
            detail: detail.to_string(),
        }
    }

    fn classify(&self, error: etcd_client::Error) -> WitnessError {
        let reason = classify(error, &self.config, &self.config.endpoints);
        self.update(|s| {
            s.reachable = reason.etcd_answered();
            s.problem = Some(reason.to_string());
        });
        reason
    }

    /// Connects, grants a lease and keeps it alive, for the daemon's life.
    /// A lease that could not be renewed within its TTL is taken as gone
    /// (etcd deletes our key with it) and a new one is granted.
    async fn keep_lease(self: Arc<Self>) {
        let ttl = self.config.lease_ttl;
        // A sixth of the TTL per request: a renewal that fails is known
        // by half the TTL, which leaves the isolation rule the other half.
        let timeout = (ttl / 6).max(Duration::from_millis(100));
        loop {
            let pause = match self.keep_lease_once(timeout).await {
                Ok(next) => {
                    self.at_risk
                        .send_if_modified(|r| std::mem::replace(r, false));
                    next
                }
                Err(reason) => {
                    let (lost, at_risk) = {
                        let mut guard = self.session.lock().await;
                        let now = Instant::now();
                        let lost = guard.as_mut().is_some_and(|session| {
                            session.keep_alive = None;
                            session.reconnect = true;
                            let expired = session.lease.is_some_and(|l| !l.alive_at(now));
                            if expired {
                                session.lease = None;
                                self.set_deadline(None);
                            }
                            expired
                        });
                        let at_risk = guard.as_ref().and_then(|s| s.lease).is_none_or(|l| {
                            l.deadline().saturating_duration_since(now) <= l.ttl / 2
                        });
                        (lost, at_risk)
                    };
                    self.at_risk
                        .send_if_modified(|r| std::mem::replace(r, at_risk) != at_risk);
                    if lost {
                        tracing::error!(key = %self.config.key, "witness lease lost (not renewed within its TTL): {reason}");
                        self.update(|s| {
                            s.holds_lease = false;
                            s.holds_key = false;
                        });
                    }
                    timeout
                }
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// One step: connect, grant or renew. Returns how long to wait before
    /// the next one.
    async fn keep_lease_once(&self, timeout: Duration) -> Result<Duration, WitnessError> {
        let mut guard = self.session.lock().await;
        if guard.as_ref().is_none_or(|s| s.reconnect) {
            let client = connect(&self.config, &self.config.endpoints, timeout)
                .await
                .inspect_err(|reason| {
                    self.update(|s| {
                        s.reachable = reason.etcd_answered();
                        s.problem = Some(reason.to_string());
                    });
                })?;
            // A new connection keeps the lease we hold (it lives in etcd,
            // not in the connection).
            let lease = guard.as_ref().and_then(|s| s.lease);
            *guard = Some(Session {
                client,
                lease,
                keep_alive: None,
                reconnect: false,
            });
        }
        let Some(session) = guard.as_mut() else {
            return Err(self.unreachable("not connected"));
        };
        let sent = Instant::now();
        let lease = match session.lease.filter(|l| l.alive_at(sent)) {
            None => {
                let granted = session
                    .client
                    .lease_grant(self.config.lease_ttl.as_secs() as i64, None)
                    .await
                    .map_err(|e| self.classify(e))?;
                let lease = LeaseClock {
                    id: granted.id(),
                    ttl: Duration::from_secs(granted.ttl().max(1) as u64),
                    confirmed_at: sent,
                };
                session.lease = Some(lease);
                session.keep_alive = None;
                self.set_deadline(Some(lease));
                tracing::info!(
                    lease = lease.id,
                    ttl_s = lease.ttl.as_secs(),
                    "witness lease granted"
                );
                self.update(|s| {
                    s.holds_lease = true;
                    s.holds_key = false;
                    s.lease_ttl_s = lease.ttl.as_secs();
                });
                lease
            }
            Some(mut lease) => {
                if session.keep_alive.is_none() {
                    let stream = session
                        .client
                        .lease_keep_alive(lease.id)
                        .await
                        .map_err(|e| self.classify(e))?;
                    session.keep_alive = Some(stream);
                }
                let Some((keeper, stream)) = session.keep_alive.as_mut() else {
                    return Err(self.unreachable("no keep-alive stream"));
                };
                keeper.keep_alive().await.map_err(|e| self.classify(e))?;
                let answer = tokio::time::timeout(timeout, stream.message())
                    .await
                    .map_err(|_| self.unreachable("keep-alive not answered in time"))?
                    .map_err(|e| self.classify(e))?
                    .ok_or_else(|| self.unreachable("keep-alive stream closed"))?;
                if answer.ttl() <= 0 {
                    // etcd says the lease is gone: so is our key.
                    session.lease = None;
                    session.keep_alive = None;
                    self.set_deadline(None);
                    self.update(|s| {
                        s.holds_lease = false;
                        s.holds_key = false;
                    });
                    tracing::error!(key = %self.config.key, "witness lease expired at etcd; a new one is granted");
                    return Ok(Duration::ZERO);
                }
                lease.confirmed(sent, Duration::from_secs(answer.ttl() as u64));
                session.lease = Some(lease);
                self.set_deadline(Some(lease));
                lease
            }
        };
        self.update(|s| {
            s.reachable = true;
            s.holds_lease = true;
            s.problem = None;
        });
        Ok(lease.renew_every())
    }
}

impl WitnessError {
    /// etcd answered, and said no (credentials, a TLS handshake): it is
    /// reachable, only not usable as configured.
    pub fn etcd_answered(&self) -> bool {
        matches!(self, WitnessError::Refused(_) | WitnessError::Tls { .. })
    }
}

/// What a failed TLS handshake means, in the operator's terms; `None`
/// when `detail` is no TLS failure.
fn tls_hint(detail: &str) -> Option<&'static str> {
    // rustls' words: "invalid peer certificate: <why>" for etcd's
    // certificate, the alert's name for ours; matched whole, since a bare
    // "Expired" is also tonic's timeout (`TimeoutExpired`).
    const HINTS: &[(&str, &str)] = &[
        ("certificate: UnknownIssuer", "etcd's certificate is not signed by witness.tls.ca"),
        ("certificate: NotValidForName", "etcd's certificate does not name the address in `endpoints`"),
        ("certificate: Expired", "etcd's certificate has expired (or this server's clock is wrong)"),
        ("certificate: NotValidYet", "etcd's certificate is not valid yet (or this server's clock is wrong)"),
        ("invalid peer certificate", "etcd's certificate was not accepted"),
        ("CertificateRequired", "etcd wants a client certificate: set witness.tls cert and key"),
        ("BadCertificate", "etcd did not accept our client certificate (witness.tls cert and key)"),
        ("UnknownCA", "etcd did not accept our client certificate: not signed by a CA it trusts"),
        ("InvalidContentType", "etcd does not speak TLS there: use http:// or enable TLS in etcd"),
        ("CorruptMessage", "etcd does not speak TLS there: use http:// or enable TLS in etcd"),
    ];
    HINTS
        .iter()
        .find(|(word, _)| detail.contains(word))
        .map(|(_, hint)| *hint)
}

/// What an etcd error means for us: etcd answers a wrong password or a
/// missing user with InvalidArgument ("authentication failed", "user name
/// is empty"), a token it no longer knows with Unauthenticated; a failed
/// TLS handshake is `Tls`, with what to fix; anything else is taken as etcd
/// out of reach.
pub fn classify(
    error: etcd_client::Error,
    config: &WitnessConfig,
    endpoints: &[String],
) -> WitnessError {
    let refused = match &error {
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => true,
            tonic::Code::InvalidArgument => {
                let message = status.message();
                ["authentication", "user name", "password", "permission"]
                    .iter()
                    .any(|word| message.contains(word))
            }
            _ => false,
        },
        _ => false,
    };
    if refused {
        return WitnessError::Refused(error.to_string());
    }
    // tonic and rustls say what failed only in words (the error's source
    // chain, which its Display includes).
    let detail = error.to_string();
    // TLS 1.3 ends the handshake before the server checks our certificate:
    // without one, all we see is the connection closed right after.
    let closed = ["broken pipe", "BrokenPipe", "connection reset", "ConnectionReset", "connection closed"]
        .iter()
        .any(|word| detail.contains(word));
    let without_identity = config.tls.as_ref().is_some_and(|tls| tls.identity.is_none());
    let our_certificate = ["BadCertificate", "CertificateRequired", "UnknownCA"]
        .iter()
        .any(|word| detail.contains(word));
    let hint = if without_identity && our_certificate {
        Some("etcd wants a client certificate, and witness.tls has no cert and key")
    } else if without_identity && closed {
        Some("etcd closed the connection after the handshake: it may want a client certificate, and witness.tls has no cert and key")
    } else {
        tls_hint(&detail)
    };
    if let Some(hint) = hint {
        WitnessError::Tls {
            endpoints: endpoints.join(", "),
            hint,
            detail,
        }
    } else {
        WitnessError::Unreachable {
            endpoints: endpoints.join(", "),
            detail: error.to_string(),
        }
    }
}

/// The client options `[witness]` asks for: credentials, TLS files (read
/// now: a missing file is an error naming its key), `timeout` per request.
pub fn connect_options(config: &WitnessConfig, timeout: Duration) -> anyhow::Result<ConnectOptions> {
    let mut options = ConnectOptions::new()
        .with_timeout(timeout)
        .with_connect_timeout(timeout);
    if let Some(credentials) = &config.credentials {
        options = options.with_user(credentials.user.clone(), credentials.password.clone());
    }
    if let Some(tls) = &config.tls {
        use anyhow::Context as _;
        let ca =
            std::fs::read(&tls.ca).with_context(|| format!("witness.tls.ca {}", tls.ca.display()))?;
        let mut tls_options = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
        if let Some((cert, key)) = &tls.identity {
            let cert = std::fs::read(cert)
                .with_context(|| format!("witness.tls.cert {}", cert.display()))?;
            let key =
                std::fs::read(key).with_context(|| format!("witness.tls.key {}", key.display()))?;
            tls_options = tls_options.identity(Identity::from_pem(cert, key));
        }
        options = options.with_tls(tls_options);
    }
    Ok(options)
}

/// A connection to the first of `endpoints` that answers (a status
/// request, which any member serves): etcd-client balances requests over
/// every endpoint it is given, so one dead member would fail a share of
/// renewals and claims. A later failure reconnects (`Session::reconnect`),
/// again to the first that answers. Also `doctor`'s, which grants and
/// writes nothing.
pub async fn connect(
    config: &WitnessConfig,
    endpoints: &[String],
    timeout: Duration,
) -> Result<Client, WitnessError> {
    let options = connect_options(config, timeout)
        .map_err(|e| WitnessError::Refused(format!("{e:#}")))?;
    let mut first_error = None;
    for endpoint in endpoints {
        let answered = match Client::connect([endpoint], Some(options.clone())).await {
            Ok(mut client) => client.status().await.map(|_| client),
            Err(e) => Err(e),
        };
        match answered {
            Ok(client) => return Ok(client),
            Err(e) => {
                let reason = classify(e, config, std::slice::from_ref(endpoint));
                // Refused credentials are the same at every member.
                if matches!(reason, WitnessError::Refused(_)) {
                    return Err(reason);
                }
                first_error.get_or_insert(reason);
            }
        }
    }
    Err(match first_error {
        Some(WitnessError::Unreachable { detail, .. }) => WitnessError::Unreachable {
            endpoints: endpoints.join(", "),
            detail,
        },
        Some(other) => other,
        None => WitnessError::Unreachable {
            endpoints: String::new(),
            detail: "no endpoint configured".to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::tls_hint;

    #[test]
    fn tls_failures_seen_in_the_lab_get_their_hint_and_others_none() {
        // tonic's words for a server certificate of another CA (the lab's).
        let unknown_issuer = "grpc request error: code: 'The service is currently unavailable', message: \"invalid peer certificate: UnknownIssuer\", source: tonic::transport::Error(Transport, ConnectError(Custom { kind: InvalidData, error: InvalidCertificate(UnknownIssuer) }))";
        assert_eq!(
            tls_hint(unknown_issuer),
            Some("etcd's certificate is not signed by witness.tls.ca")
        );
        assert_eq!(
            tls_hint("invalid peer certificate: NotValidForName"),
            Some("etcd's certificate does not name the address in `endpoints`")
        );
        // A plain timeout or refused connection is no TLS matter.
        assert_eq!(tls_hint("tonic::transport::Error(Transport, TimeoutExpired(()))"), None);
        assert_eq!(tls_hint("Connection refused (os error 111)"), None);
    }
}
