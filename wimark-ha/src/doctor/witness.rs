//! `[witness]` as this server sees it: each etcd member answers (and who
//! leads), our credentials are taken, and who holds the key — the pair's
//! own nodes, nobody, or a foreign writer that would hold every promotion
//! back.
//!
//! Owns: those checks. Must not: grant a lease, write or delete the key
//! (the daemon's witness does that; doctor only connects and reads).

use std::time::Duration;

use super::{bad, ok, Finding, Status};
use crate::{
    config::WitnessConfig,
    witness::{
        claim::{holder, Holder},
        connect, WitnessError,
    },
};

/// Per member and per request: an answer slower than this is no answer
/// for a witness whose lease lives a few seconds.
const TIMEOUT: Duration = Duration::from_secs(2);

pub async fn check(config: &WitnessConfig) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut answering = 0;
    for endpoint in &config.endpoints {
        let check = format!("witness {endpoint}");
        let finding = match member(config, endpoint).await {
            Ok(detail) => {
                answering += 1;
                ok(&check, detail)
            }
            Err(WitnessError::Refused(detail)) => bad(
                Status::Fail,
                &check,
                format!("etcd refused our credentials: {detail}"),
                "set [witness] user/password (or tls) to what etcd's auth expects",
            ),
            Err(e @ WitnessError::Tls { .. }) => bad(
                Status::Fail,
                &check,
                e.to_string(),
                "make [witness] tls match etcd's: ca = the CA that signed etcd's certificate, cert/key one etcd's --trusted-ca-file signed",
            ),
            Err(e) => bad(
                // One member of several down leaves the others a quorum.
                if config.endpoints.len() > 1 {
                    Status::Warn
                } else {
                    Status::Fail
                },
                &check,
                e.to_string(),
                "start etcd there, or let this server reach it (tcp 2379 from here)",
            ),
        };
        findings.push(finding);
    }
    if answering == 0 {
        findings.push(bad(
            Status::Fail,
            "witness key",
            "no etcd member answers: a takeover here would take the VIP but hold the master stack back",
            "bring the witness back before relying on it (`status` shows it as unreachable meanwhile)",
        ));
        return findings;
    }
    findings.push(key(config).await);
    findings
}

/// One member on its own: its version and whether it leads.
async fn member(config: &WitnessConfig, endpoint: &str) -> Result<String, WitnessError> {
    let endpoints = [endpoint.to_string()];
    let mut client = connect(config, &endpoints, TIMEOUT).await?;
    let status = client
        .status()
        .await
        .map_err(|e| crate::witness::classify(e, config, &endpoints))?;
    let member = status.header().map(|h| h.member_id()).unwrap_or_default();
    let role = match status.leader() {
        0 => "no leader (the cluster has no quorum)".to_string(),
        leader if leader == member => "the leader".to_string(),
        leader => format!("following leader {leader:x}"),
    };
    Ok(format!("etcd {} answers, {role}", status.version()))
}

/// Who holds the key, read through every member.
async fn key(config: &WitnessConfig) -> Finding {
    const CHECK: &str = "witness key";
    let read = async {
        let mut client = connect(config, &config.endpoints, TIMEOUT).await?;
        let answer = client
            .get(config.key.as_bytes(), None)
            .await
            .map_err(|e| crate::witness::classify(e, config, &config.endpoints))?;
        let Some(kv) = answer.kvs().first() else {
            return Ok(None);
        };
        // How long the holder's lease lives on (read only).
        let left = match kv.lease() {
            0 => None,
            lease => client
                .lease_time_to_live(lease, None)
                .await
                .ok()
                .map(|t| t.ttl()),
        };
        Ok::<_, WitnessError>(Some((kv.value().to_vec(), kv.lease(), left)))
    };
    match read.await {
        Err(WitnessError::Refused(detail)) => bad(
            Status::Fail,
            CHECK,
            format!("etcd refused to let us read {}: {detail}", config.key),
            "grant the witness user read and write on the key (etcdctl role grant-permission)",
        ),
        Err(e) => bad(
            Status::Fail,
            CHECK,
            e.to_string(),
            "let this server reach the etcd members",
        ),
        Ok(None) => ok(
            CHECK,
            format!(
                "{} is free: the first master here or on the peer takes it",
                config.key
            ),
        ),
        Ok(Some((value, lease, left))) => match holder(&value, lease, None) {
            Holder::Node(node) => {
                let whose = if node == config.node {
                    "this server"
                } else {
                    "the peer"
                };
                let left = left.map_or(String::new(), |s| format!(", its lease {s} s from expiry"));
                ok(
                    CHECK,
                    format!("{} held by {node} ({whose}){left}", config.key),
                )
            }
            // `holder` without our lease never says Us.
            Holder::Us => ok(CHECK, format!("{} held under a lease", config.key)),
            Holder::Foreign(what) => bad(
                Status::Fail,
                CHECK,
                format!(
                    "{} is held by a foreign writer ({what}): wimark-ha never takes it over, so no master stack would start",
                    config.key
                ),
                format!(
                    "remove it (etcdctl del {}) if it is stale, or give this pair a key of its own",
                    config.key
                ),
            ),
        },
    }
}
