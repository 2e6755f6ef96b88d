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
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, Identity, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse,
};

use crate::{clock::unix_ms, config::WitnessConfig, records::WitnessStatus};

pub mod claim;
pub mod probe;

use claim::{holder, Claim, Holder, LeaseClock};

/// How often a waiting promotion asks again. The wait ends when the old
/// holder's lease expires (etcd deletes the key) or it releases the key.
const CLAIM_POLL: Duration = Duration::from_millis(100);

/// Why the key is not ours (yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessError {
    #[error("etcd unreachable at {endpoints}: {detail}")]
    Unreachable { endpoints: String, detail: String },
    #[error("etcd refused our credentials: {0}")]
    Refused(String),
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
}

impl Witness {
    /// The witness, its lease kept alive by a task on the current runtime.
    pub fn start(config: WitnessConfig, peers: Vec<std::net::IpAddr>) -> Arc<Self> {
        let witness = Arc::new(Self {
            peers,
            at_risk: tokio::sync::watch::Sender::new(false),
            deadline: Mutex::new(None),
            key_problem: Mutex::new(None),
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

    /// Whether the peer answers (`None`: it cannot be told, e.g. no IPv4
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
        loop {
            match self.claim().await {
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
            tokio::time::sleep(CLAIM_POLL).await;
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
        let mut guard = self.session.lock().await;
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
        let session = guard.as_mut().ok_or_else(no_lease)?;
        let lease = session
            .lease
            .filter(|l| l.alive_at(Instant::now()))
            .ok_or_else(no_lease)?;
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
        let response = session
            .client
            .txn(txn)
            .await
            .map_err(|e| self.classify(e))?;
        self.update(|s| {
            s.reachable = true;
            s.problem = None;
        });
        if response.succeeded() {
            return Ok(());
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
            return Err(WitnessError::HeldByPeer("nobody (just released)".into()));
        };
        match holder(&value, holder_lease, Some(lease.id)) {
            Holder::Us => Ok(()),
            Holder::Node(node) if node == self.config.node => Err(WitnessError::OwnStaleClaim),
            Holder::Node(node) => Err(WitnessError::HeldByPeer(node)),
            Holder::Foreign(what) => Err(WitnessError::Foreign(what)),
        }
    }

    /// Gives the key up (the master stack is stopped here): the peer's
    /// waiting promotion goes ahead at once, not after the TTL. Only the
    /// key under our own lease is deleted.
    pub async fn release(&self) {
        if !self.status().holds_key {
            return;
        }
        let mut guard = self.session.lock().await;
        let Some(session) = guard.as_mut() else {
            return;
        };
        let Some(lease) = session.lease else { return };
        let key = self.config.key.as_bytes().to_vec();
        let txn = Txn::new()
            .when([Compare::lease(key.clone(), CompareOp::Equal, lease.id)])
            .and_then([TxnOp::delete(key, None)]);
        match session.client.txn(txn).await {
            Ok(response) => {
                self.update(|s| s.holds_key = false);
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
        // etcd answers a wrong password or a missing user with
        // InvalidArgument ("authentication failed", "user name is empty"),
        // a token it no longer knows with Unauthenticated.
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
        let reason = if refused {
            WitnessError::Refused(error.to_string())
        } else {
            self.unreachable(&error.to_string())
        };
        self.update(|s| {
            s.reachable = refused;
            s.problem = Some(reason.to_string());
        });
        reason
    }

    fn options(&self, timeout: Duration) -> anyhow::Result<ConnectOptions> {
        let mut options = ConnectOptions::new()
            .with_timeout(timeout)
            .with_connect_timeout(timeout);
        if let Some(credentials) = &self.config.credentials {
            options = options.with_user(credentials.user.clone(), credentials.password.clone());
        }
        if let Some(tls) = &self.config.tls {
            use anyhow::Context as _;
            let ca = std::fs::read(&tls.ca)
                .with_context(|| format!("witness.tls.ca {}", tls.ca.display()))?;
            let mut config = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
            if let Some((cert, key)) = &tls.identity {
                let cert = std::fs::read(cert)
                    .with_context(|| format!("witness.tls.cert {}", cert.display()))?;
                let key = std::fs::read(key)
                    .with_context(|| format!("witness.tls.key {}", key.display()))?;
                config = config.identity(Identity::from_pem(cert, key));
            }
            options = options.with_tls(config);
        }
        Ok(options)
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
                    let lost = {
                        let mut guard = self.session.lock().await;
                        match guard.as_mut() {
                            Some(session) => {
                                session.keep_alive = None;
                                let expired =
                                    session.lease.is_some_and(|l| !l.alive_at(Instant::now()));
                                if expired {
                                    session.lease = None;
                                    self.set_deadline(None);
                                }
                                expired
                            }
                            None => false,
                        }
                    };
                    let at_risk = {
                        let guard = self.session.lock().await;
                        let now = Instant::now();
                        guard.as_ref().and_then(|s| s.lease).is_none_or(|l| {
                            l.deadline().saturating_duration_since(now) <= l.ttl / 2
                        })
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
        if guard.is_none() {
            let options = self.options(timeout).map_err(|e| {
                let reason = WitnessError::Refused(format!("{e:#}"));
                self.update(|s| s.problem = Some(reason.to_string()));
                reason
            })?;
            let client = Client::connect(&self.config.endpoints, Some(options))
                .await
                .map_err(|e| self.classify(e))?;
            *guard = Some(Session {
                client,
                lease: None,
                keep_alive: None,
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
