//! The firewall between the servers and toward the APs: iptables rules that
//! would drop VRRP, the AP sync, SSH, IKE, NAT-T or MQTT.

use std::process::Command;

use super::{bad, ok, Finding, Status, PORTS};

/// `iptables -S CHAIN`, or None when iptables is not installed.
fn iptables(chain: &str) -> Option<Result<String, String>> {
    let output = Command::new("iptables").args(["-S", chain]).output().ok()?;
    Some(if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).to_string())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    })
}

/// One `iptables -S` rule line, as far as the port checks need it.
struct Rule<'a> {
    words: Vec<&'a str>,
}

impl<'a> Rule<'a> {
    fn parse(line: &'a str) -> Self {
        Self {
            words: line.split_whitespace().collect(),
        }
    }

    /// The word after `flag`.
    fn value(&self, flag: &str) -> Option<&'a str> {
        let index = self.words.iter().position(|w| *w == flag)?;
        self.words.get(index + 1).copied()
    }

    /// Whether the rule applies to `port`/`proto` (no port or protocol
    /// given means every one; `--dports` lists and `low:high` ranges count).
    fn covers(&self, port: u16, proto: &str) -> bool {
        if self.value("-p").is_some_and(|p| p != proto) {
            return false;
        }
        match self.value("--dport").or_else(|| self.value("--dports")) {
            None => true,
            Some(ports) => ports.split(',').any(|p| match p.split_once(':') {
                Some((low, high)) => {
                    let (low, high) = (low.parse().unwrap_or(0), high.parse().unwrap_or(u16::MAX));
                    (low..=high).contains(&port)
                }
                None => p.parse() == Ok(port),
            }),
        }
    }

    /// Narrowed by source, interface, state or another match module: not a
    /// blanket decision for the port.
    fn narrowed(&self) -> bool {
        ["-s", "-i", "--state", "--ctstate"]
            .iter()
            .any(|f| self.value(f).is_some())
            || self
                .words
                .windows(2)
                .any(|w| w[0] == "-m" && !["tcp", "udp", "multiport", "comment"].contains(&w[1]))
    }
}

/// Whether an iptables rule line drops or rejects `port`/`proto`.
pub(super) fn rule_blocks(line: &str, port: u16, proto: &str) -> bool {
    let rule = Rule::parse(line);
    matches!(rule.value("-j"), Some("DROP" | "REJECT"))
        && !rule.narrowed()
        && rule.covers(port, proto)
}

/// Whether an iptables rule line accepts `port`/`proto`.
pub(super) fn rule_accepts(line: &str, port: u16, proto: &str) -> bool {
    let rule = Rule::parse(line);
    rule.value("-j") == Some("ACCEPT") && rule.covers(port, proto)
}

pub(super) fn firewall() -> Vec<Finding> {
    let Some(forward) = iptables("FORWARD") else {
        return vec![bad(
            Status::Warn,
            "firewall",
            "iptables is not installed: FORWARD policy and open ports not checked",
            "apt install iptables, or check the nftables ruleset by hand",
        )];
    };
    let mut findings = Vec::new();
    match forward {
        Ok(rules) if rules.lines().any(|l| l.trim() == "-P FORWARD ACCEPT") => {
            findings.push(ok("iptables FORWARD", "policy ACCEPT"))
        }
        Ok(rules) => findings.push(bad(
            Status::Fail,
            "iptables FORWARD",
            format!(
                "policy is not ACCEPT ({})",
                rules.lines().next().unwrap_or("?").trim()
            ),
            "iptables -P FORWARD ACCEPT (and persist it)",
        )),
        Err(e) => findings.push(bad(
            Status::Warn,
            "iptables FORWARD",
            format!("cannot list rules: {e}"),
            "run doctor as root",
        )),
    }
    let input = match iptables("INPUT") {
        Some(Ok(rules)) => rules,
        Some(Err(e)) => {
            findings.push(bad(
                Status::Warn,
                "ports",
                format!("cannot list INPUT rules: {e}"),
                "run doctor as root",
            ));
            return findings;
        }
        None => return findings,
    };
    let policy_drop = input.lines().any(|l| l.trim() == "-P INPUT DROP");
    for (port, proto, why) in PORTS {
        let check = format!("port {port}/{proto}");
        // iptables evaluates in order: the first rule that decides wins.
        let decision = input
            .lines()
            .filter(|l| l.starts_with("-A INPUT"))
            .find(|l| rule_blocks(l, port, proto) || rule_accepts(l, port, proto));
        match decision {
            Some(rule) if rule_blocks(rule, port, proto) => findings.push(bad(
                Status::Fail,
                &check,
                format!("blocked by `{}` ({why})", rule.trim()),
                format!("iptables -I INPUT -p {proto} --dport {port} -j ACCEPT"),
            )),
            Some(_) => findings.push(ok(&check, format!("accepted ({why})"))),
            None if policy_drop => findings.push(bad(
                Status::Fail,
                &check,
                format!("INPUT policy DROP and no rule accepts it ({why})"),
                format!("iptables -A INPUT -p {proto} --dport {port} -j ACCEPT"),
            )),
            None => findings.push(ok(&check, format!("not blocked ({why})"))),
        }
    }
    findings
}
