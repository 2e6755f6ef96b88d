//! `wimark-ha doctor`: the vendor's preparation list, checked on the machine
//! it runs on — kernel and BPF, sysctls, firewall, Docker and the stacks,
//! the peer, password-less ssh, a keepalived still running on our VRID, the
//! etcd witness.
//! Each finding is OK, WARN or FAIL with the fix.
//!
//! Owns: the checks and their wording. Must not: change anything on the
//! machine (it only reads, connects and asks).

use std::{
    net::{IpAddr, SocketAddr, TcpStream},
    process::Command,
    time::Duration,
};

use serde::Serialize;

use crate::config::{Config, Selector};

mod ap_recovery;
mod firewall;
mod hook_paths;
mod keepalived;
mod peers;
mod swanctl;
mod witness;

use firewall::firewall;
#[cfg(test)]
use firewall::{rule_accepts, rule_blocks};
use keepalived::keepalived_conflict;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub check: String,
    pub status: Status,
    pub detail: String,
    /// What to do about it (WARN and FAIL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn ok(check: &str, detail: impl Into<String>) -> Finding {
    Finding {
        check: check.to_string(),
        status: Status::Ok,
        detail: detail.into(),
        fix: None,
    }
}

fn bad(status: Status, check: &str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        check: check.to_string(),
        status,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

/// The ports the APs and the peer need (the vendor's firewall list).
pub const PORTS: [(u16, &str, &str); 6] = [
    (500, "udp", "IKE from the APs"),
    (4500, "udp", "NAT-T from the APs"),
    (1883, "tcp", "MQTT from the APs"),
    (80, "tcp", "web NMS"),
    (443, "tcp", "web NMS"),
    (22, "tcp", "ssh between the servers"),
];

/// Runs every check; `config` is None when the config could not be read
/// (that is itself a finding, and the config-dependent checks are skipped).
pub async fn run(config: Option<&Config>) -> Vec<Finding> {
    let mut findings = vec![kernel(), bpf()];
    findings.push(sysctl(
        "net.ipv4.ip_forward",
        "forwarding for the containers' traffic",
    ));
    findings.push(sysctl(
        "net.ipv4.ip_nonlocal_bind",
        "services binding the VIP before this server holds it",
    ));
    findings.extend(firewall());
    findings.push(keepalived_conflict(config));
    if let Some(config) = config {
        findings.extend(interfaces(config));
        findings.extend(peers::check(config));
        findings.extend(docker(config).await);
        findings.extend(hook_paths::check(config));
        findings.extend(ap_recovery::check(config));
        if let Some(witness) = &config.witness {
            findings.extend(witness::check(witness).await);
        }
        if let Some(peer) = &config.peer {
            let interface = config.instances.first().map(|i| i.interface.as_str());
            findings.push(peer_reachable(peer.address, interface));
            if let Some(user) = &peer.ssh_user {
                findings.push(ssh(user, peer.address));
            }
        } else {
            findings.push(bad(
                Status::Warn,
                "peer",
                "no [peer] in the config: reachability and ssh are not checked",
                "add [peer] address = \"…\" (and ssh_user if the peer is managed over ssh)",
            ));
        }
    }
    findings
}

fn kernel() -> Finding {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    if (major, minor) >= (5, 8) {
        ok(
            "kernel",
            format!("Linux {release} (5.8 or newer: BPF ring buffers, CAP_BPF)"),
        )
    } else {
        bad(
            Status::Fail,
            "kernel",
            format!("Linux {release} is older than 5.8"),
            "upgrade the kernel (Debian 11 has 5.10, Debian 12 has 6.1)",
        )
    }
}

/// Loads the XDP program (without attaching it anywhere): the kernel, the
/// verifier and our privileges all agree, or say why not.
fn bpf() -> Finding {
    use crate::monitor::MonitorError;
    match crate::monitor::load(None) {
        Ok(_) => ok("bpf", "the XDP monitor loads (verifier accepted it)"),
        Err(e) => {
            let fix = match &e {
                MonitorError::ObjectMissing => {
                    "install the packaged binary (or build with `cargo xtask build`)"
                }
                MonitorError::NotPermitted { .. } => {
                    "run as root (the service has CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN)"
                }
                _ => "a kernel with BPF, XDP and BPF ring buffers (Debian 12's 6.1 has them)",
            };
            bad(Status::Fail, "bpf", e.to_string(), fix)
        }
    }
}

fn sysctl(name: &str, why: &str) -> Finding {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    match std::fs::read_to_string(&path) {
        Ok(value) if value.trim() == "1" => ok(name, format!("1 ({why})")),
        Ok(value) => bad(
            Status::Fail,
            name,
            format!("{} (the vendor's setup needs 1: {why})", value.trim()),
            format!("echo '{name} = 1' >> /etc/sysctl.conf && sysctl -p"),
        ),
        Err(e) => bad(
            Status::Warn,
            name,
            format!("cannot read {path}: {e}"),
            "check the sysctl by hand",
        ),
    }
}

fn interfaces(config: &Config) -> Vec<Finding> {
    let mut seen = Vec::new();
    let mut findings = Vec::new();
    for instance in &config.instances {
        if seen.contains(&instance.interface) {
            continue;
        }
        seen.push(instance.interface.clone());
        let check = format!("interface {}", instance.interface);
        let operstate =
            std::fs::read_to_string(format!("/sys/class/net/{}/operstate", instance.interface));
        // sysfs may show another namespace; ask the kernel by name instead.
        let index = nix::net::if_::if_nametoindex(instance.interface.as_str()).ok();
        match (index, operstate) {
            (None, _) => findings.push(bad(
                Status::Fail,
                &check,
                "does not exist",
                "set `interface` to the peer link (list them with `ip link`)",
            )),
            (Some(_), Ok(state)) if state.trim() == "down" => findings.push(bad(
                Status::Fail,
                &check,
                "is down",
                format!("ip link set {} up", instance.interface),
            )),
            (Some(_), _) => findings.push(ok(&check, "exists")),
        }
    }
    findings
}

async fn docker(config: &Config) -> Vec<Finding> {
    let Some(roles) = &config.roles else {
        return vec![ok("docker", "no [roles]: containers are not switched")];
    };
    let socket = roles.docker_socket.display().to_string();
    let docker = match bollard::Docker::connect_with_unix(&socket, 5, bollard::API_DEFAULT_VERSION)
    {
        Ok(docker) => docker,
        Err(e) => {
            return vec![bad(
                Status::Fail,
                "docker",
                format!("{socket}: {e}"),
                "install and start Docker (systemctl enable --now docker)",
            )]
        }
    };
    if let Err(e) = docker.ping().await {
        return vec![bad(
            Status::Fail,
            "docker",
            format!("dockerd not answering on {socket}: {e}"),
            "systemctl start docker, or fix [roles] docker_socket",
        )];
    }
    let mut findings = vec![ok("docker", format!("dockerd answers on {socket}"))];
    for (role, selector) in [("master", &roles.master), ("backup", &roles.backup)] {
        let check = format!("{role} stack");
        // The very listing the role switch uses.
        match crate::roles::stack_members(&docker, selector).await {
            Ok(containers) if containers.is_empty() => findings.push(bad(
                Status::Fail,
                &check,
                format!("no containers match {selector}"),
                match selector {
                    Selector::ComposeProject(project) => format!(
                        "create it: docker-compose -p {project} up --no-start (in its compose directory)"
                    ),
                    Selector::Labels(_) => "create the containers with those labels".to_string(),
                },
            )),
            Ok(containers) => findings.push(ok(
                &check,
                format!("{} container(s) match {selector}", containers.len()),
            )),
            Err(e) => findings.push(bad(Status::Fail, &check, e, "check dockerd")),
        }
    }
    findings
}

/// The peer answers on the peer link: a TCP connection to its ssh port is
/// accepted or refused (either way it is there); silence is a FAIL.
fn peer_reachable(address: IpAddr, interface: Option<&str>) -> Finding {
    let target = SocketAddr::new(address, 22);
    let via = interface.map_or(String::new(), |i| format!(" via {i}"));
    match TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
        Ok(_) => ok("peer", format!("{address} answers{via} (ssh port open)")),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            ok("peer", format!("{address} answers{via} (ssh port closed)"))
        }
        Err(e) => bad(
            Status::Fail,
            "peer",
            format!("{address} does not answer{via}: {e}"),
            "check the peer link: cabling, addresses, the peer being up",
        ),
    }
}

fn ssh(user: &str, address: IpAddr) -> Finding {
    let output = Command::new("ssh")
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=3",
            "-o",
            "StrictHostKeyChecking=accept-new",
        ])
        .arg(format!("{user}@{address}"))
        .arg("true")
        .output();
    match output {
        Ok(o) if o.status.success() => ok("ssh", format!("{user}@{address} without a password")),
        Ok(o) => bad(
            Status::Fail,
            "ssh",
            format!(
                "{user}@{address} without a password failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            format!("ssh-keygen, then ssh-copy-id {user}@{address}"),
        ),
        Err(e) => bad(
            Status::Fail,
            "ssh",
            format!("cannot run ssh: {e}"),
            "apt install openssh-client",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iptables_rules_that_block_a_port() {
        assert!(rule_blocks(
            "-A INPUT -p udp -m udp --dport 4500 -j DROP",
            4500,
            "udp"
        ));
        assert!(!rule_blocks(
            "-A INPUT -p udp -m udp --dport 4500 -j DROP",
            4500,
            "tcp"
        ));
        assert!(!rule_blocks(
            "-A INPUT -p udp -m udp --dport 4500 -j DROP",
            500,
            "udp"
        ));
        assert!(rule_blocks(
            "-A INPUT -p tcp -m multiport --dports 80,443 -j REJECT",
            443,
            "tcp"
        ));
        assert!(rule_blocks(
            "-A INPUT -p udp -m udp --dport 400:600 -j DROP",
            500,
            "udp"
        ));
        assert!(rule_blocks("-A INPUT -j DROP", 22, "tcp"));
        // Narrowed by source or interface: not a blanket block.
        assert!(!rule_blocks("-A INPUT -s 192.0.2.1/32 -j DROP", 22, "tcp"));
        assert!(!rule_blocks("-A INPUT -i eth9 -j DROP", 22, "tcp"));
        assert!(!rule_blocks(
            "-A INPUT -p tcp --dport 22 -j ACCEPT",
            22,
            "tcp"
        ));
        assert!(rule_accepts(
            "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT",
            22,
            "tcp"
        ));
    }
}
