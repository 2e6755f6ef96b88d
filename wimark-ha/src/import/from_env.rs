//! What the vendor's `.env` files give the imported config beyond the
//! instances: the pair's peer (`SECOND_IP`) and the `[roles]` that replace
//! `master-backup.sh`.
//!
//! Owns: those sections. Must not: read keepalived's keywords (convert.rs).

use super::output::{quoted, Output};
use super::*;

/// A multicast instance's `peers` from the vendor's `SECOND_IP`: a pair
/// naming its one peer takes over without the multi-node skew and drops
/// adverts from anyone else in XDP. A .env copied from the other server
/// names this one: then it is only offered, since it would lock the real
/// peer out.
pub(super) fn peers_from_env(out: &mut Output, env: &VendorEnv) {
    if let Some(second_ip) = env.get("SECOND_IP") {
        match second_ip.parse::<std::net::IpAddr>() {
            Ok(address) if !is_local(address) => out.line(format!(
                "peers = [{}]   # .env SECOND_IP, the other server: no multi-node skew on a takeover, adverts from any other source dropped in XDP",
                quoted(second_ip)
            )),
            Ok(_) => out.line(format!(
                "# peers = [{}]   # .env SECOND_IP is an address of THIS server: the .env is the other server's; set peers to the other server's address",
                quoted(second_ip)
            )),
            Err(_) => out.line(format!(
                "# peers = [{}]   # .env SECOND_IP is not an IP address: set peers to the other server's address",
                quoted(second_ip)
            )),
        }
    }
}

/// Whether `address` is one of this machine's own (a .env that names this
/// server as the other one).
fn is_local(address: std::net::IpAddr) -> bool {
    nix::ifaddrs::getifaddrs().is_ok_and(|mut addresses| {
        addresses.any(|a| {
            a.address.is_some_and(|s| {
                s.as_sockaddr_in().map(|v4| std::net::IpAddr::V4(v4.ip())) == Some(address)
                    || s.as_sockaddr_in6().map(|v6| std::net::IpAddr::V6(v6.ip())) == Some(address)
            })
        })
    })
}

/// The vendor's layout: compose projects in `ENV_DIR/master` and
/// `ENV_DIR/backup` (compose names a project after its directory), switched
/// by `master-backup.sh` — which `[roles]` replaces.
pub(super) fn roles_from_env(
    out: &mut Output,
    env: &VendorEnv,
    instance: Option<&str>,
    notify: Option<&(String, Statement)>,
    vip_addresses: &[String],
) {
    let project = |role: &str| {
        env.dir
            .join(role)
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| role.to_string())
    };
    if let Some(second_ip) = env.get("SECOND_IP") {
        out.line("");
        out.line(format!(
            "# From {}/master/.env: the other server, reached over the peer link.",
            env.dir.display()
        ));
        out.line("[peer]");
        out.line(format!("address = {}", quoted(second_ip)));
        if let Some(user) = env.get("USERNAME") {
            out.line(format!("ssh_user = {}", quoted(user)));
        }
    }
    out.line("");
    out.line(format!(
        "# The container switch of master-backup.sh, done by wimark-ha: stacks created beforehand with\n\
         # `cd {0}/master && docker-compose up --no-start` (and the same in {0}/backup).",
        env.dir.display()
    ));
    out.line("[roles]");
    out.line(format!("instance = {}", quoted(instance.unwrap_or("VI_1"))));
    out.line(format!(
        "master = {{ compose_project = {} }}",
        quoted(&project("master"))
    ));
    out.line(format!(
        "backup = {{ compose_project = {} }}",
        quoted(&project("backup"))
    ));
    out.line(
        "demote_delay = \"10s\"   # master-backup.sh's `sleep 10` and re-check before demoting",
    );
    out.line("");
    out.line("[[hooks.before_promote]]   # master-backup.sh's lock clean-up before the master stack starts");
    out.line("remove = \"/usr/share/wimark/volumes/mongo/*.lock\"");
    if let Some((script, statement)) = notify {
        out.line("");
        out.line(format!(
            "# not carried over (line {}): `notify {script}` — [roles] does what master-backup.sh did; \
             calling it as well would switch the containers twice. Put other notify work in a [notify] script.",
            statement.line
        ));
    }
    if let Some(vip) = env.get("VIP") {
        if vip_addresses.iter().any(|a| a == vip) {
            out.line(format!(
                "# .env VIP={vip}: the instance's virtual IP, as it should be"
            ));
        } else {
            out.line(format!(
                "# WARNING: .env VIP={vip} is not among the instance's virtual_ips ({}): check which one is right",
                vip_addresses.join(", ")
            ));
        }
    }
    for (key, why) in [
        ("HOSTNAME", "used by the compose files, not by wimark-ha"),
        ("HOST_UUID", "used by the compose files, not by wimark-ha"),
    ] {
        if let Some(value) = env.get(key) {
            out.line(format!("# .env {key}={value}: {why}"));
        }
    }
    out.line("# lsyncd mirror of /usr/share/wimark (run only while MASTER), if the vendor's lsyncd is used:");
    out.line("# [[roles.master_process]]");
    out.line("# run = [\"/usr/bin/lsyncd\", \"-nodaemon\", \"/etc/lsyncd/lsyncd.conf.lua\"]");
    let mut unknown: Vec<&String> = env
        .master
        .keys()
        .chain(env.backup.keys())
        .filter(|k| {
            !["VIP", "SECOND_IP", "HOSTNAME", "HOST_UUID", "USERNAME"].contains(&k.as_str())
        })
        .collect();
    unknown.sort();
    unknown.dedup();
    for key in unknown {
        out.line(format!("# .env {key}: not used by wimark-ha"));
    }
}
