//! What the key says and what our lease allows, without a network: the
//! value a holder writes, who a value names, and when a lease that could
//! not be renewed must be taken as gone.
//!
//! Owns: the key's value format and the lease arithmetic. Must not: talk
//! to etcd or read a clock (callers pass the times in).

use std::time::{Duration, Instant};

/// The key's value: who holds it, so that a waiting node can say whom it
/// waits for and tell the pair's own writers from a foreign one.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claim {
    /// Always "wimark-ha": what marks the pair's own writers.
    pub writer: String,
    pub node: String,
    pub since_unix_ms: u64,
}

const WRITER: &str = "wimark-ha";

impl Claim {
    pub fn new(node: &str, since_unix_ms: u64) -> Self {
        Self {
            writer: WRITER.to_string(),
            node: node.to_string(),
            since_unix_ms,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Who holds the key, judged from its value and lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// Under our lease: ours.
    Us,
    /// A wimark-ha node (the peer, or this node before a restart, under a
    /// lease that is not ours): wait for it to be released or to expire.
    Node(String),
    /// Something else wrote it: never taken over, reported.
    Foreign(String),
}

/// Classifies the key's current value and lease against our lease.
pub fn holder(value: &[u8], lease: i64, ours: Option<i64>) -> Holder {
    if ours.is_some_and(|ours| ours == lease && lease != 0) {
        return Holder::Us;
    }
    match serde_json::from_slice::<Claim>(value) {
        Ok(claim) if claim.writer == WRITER => Holder::Node(claim.node),
        _ => {
            let text = String::from_utf8_lossy(value);
            let shown: String = text.chars().take(60).collect();
            Holder::Foreign(if lease == 0 {
                format!("`{shown}` (no lease: it never expires)")
            } else {
                format!("`{shown}`")
            })
        }
    }
}

/// Our lease as this node can vouch for it: granted or renewed at a time
/// measured *before* the request went out, so the local deadline is never
/// later than etcd's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseClock {
    pub id: i64,
    pub ttl: Duration,
    /// When the request behind the latest confirmation left.
    pub confirmed_at: Instant,
}

impl LeaseClock {
    /// The last instant at which this node may assume the lease lives.
    pub fn deadline(&self) -> Instant {
        self.confirmed_at + self.ttl
    }

    pub fn alive_at(&self, now: Instant) -> bool {
        now < self.deadline()
    }

    /// Keep-alives go out three times per TTL: one lost renewal is
    /// survived, two are not.
    pub fn renew_every(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(100))
    }

    /// A confirmation of a request sent at `sent`; never moves back.
    pub fn confirmed(&mut self, sent: Instant, ttl: Duration) {
        if sent > self.confirmed_at {
            self.confirmed_at = sent;
        }
        self.ttl = ttl;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_us_a_node_of_the_pair_or_a_foreign_writer() {
        let claim = Claim::new("wim-b", 1).encode();
        assert_eq!(holder(&claim, 7, Some(7)), Holder::Us);
        assert_eq!(holder(&claim, 7, Some(8)), Holder::Node("wim-b".into()));
        assert_eq!(holder(&claim, 7, None), Holder::Node("wim-b".into()));
        // Lease 0 is "no lease", never ours even when we have none.
        assert_ne!(holder(&claim, 0, Some(0)), Holder::Us);
        let Holder::Foreign(what) = holder(b"someone else", 9, Some(7)) else {
            panic!("foreign");
        };
        assert!(what.contains("someone else"), "{what}");
        let Holder::Foreign(what) = holder(
            br#"{"writer":"other","node":"x","since_unix_ms":0}"#,
            0,
            None,
        ) else {
            panic!("foreign");
        };
        assert!(what.contains("never expires"), "{what}");
    }

    #[test]
    fn the_local_deadline_counts_from_the_request_and_never_moves_back() {
        let start = Instant::now();
        let ttl = Duration::from_secs(2);
        let mut lease = LeaseClock {
            id: 1,
            ttl,
            confirmed_at: start,
        };
        assert!(lease.alive_at(start + Duration::from_millis(1999)));
        assert!(!lease.alive_at(start + ttl));
        lease.confirmed(start + Duration::from_secs(1), ttl);
        assert_eq!(lease.deadline(), start + Duration::from_secs(3));
        // A late answer to an older request does not move it back.
        lease.confirmed(start + Duration::from_millis(500), ttl);
        assert_eq!(lease.deadline(), start + Duration::from_secs(3));
        assert_eq!(lease.renew_every(), Duration::from_nanos(666_666_666));
    }
}
