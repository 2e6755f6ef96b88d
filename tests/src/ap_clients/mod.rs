//! Real AP clients for the lab: strongSwan's charon as each AP's IKEv2
//! initiator (PSK, UDP-encapsulated ESP) to the VIP, and charon responders
//! on the servers, as the vendor's IKE containers are.
//!
//! This kernel has no XFRM ESP, so every charon does ESP in userspace
//! (kernel-libipsec, a TUN device `ipsec0` in its namespace). Each charon
//! runs in a network namespace of the lab and in a mount namespace of its
//! own with a private `/run` (its pid file is fixed at /run/charon.pid),
//! with its own `STRONGSWAN_CONF` and vici socket. Drop kills it.
//!
//! Addresses: inside the tunnels the servers are 10.99.0.1 (on `lo` of
//! both), AP `n` is 10.99.1.n for n ≤ 250, then 10.99.2.1 and on
//! ([`ap_inner`]).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use wimark_ha::records::State;

mod charon;
mod failover;
mod fleet;
mod mqtt;
mod mqtt_fleet;
mod probes;

pub use charon::*;
pub use failover::*;
pub use fleet::*;
pub use mqtt::*;
pub use mqtt_fleet::*;
pub use probes::*;

/// The pre-shared key of the lab's IKE SAs.
pub const PSK: &str = "wimark-lab-psk";
/// The servers' address inside the tunnels.
pub const SERVER_INNER: &str = "10.99.0.1";
/// The IKE identity the servers use (both, as one controller).
pub const SERVER_ID: &str = "controller";
/// The proposals every lab charon offers and accepts (no curve25519 in
/// Debian's plugin set; the openssl plugin has modp2048).
pub(super) const IKE_PROPOSAL: &str = "aes128-sha256-modp2048";

/// The IKE proposal every lab charon and the adapter use: [`IKE_PROPOSAL`]
/// unless a bench chose another for its whole run
/// ([`use_ike_proposal`]).
static IKE_PROPOSAL_CHOSEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// For a bench's whole run (e.g. an ECP row): every lab built afterwards
/// proposes `proposal` on both sides. Set once; a second call is refused.
pub fn use_ike_proposal(proposal: &str) -> Result<()> {
    IKE_PROPOSAL_CHOSEN
        .set(proposal.to_string())
        .map_err(|_| anyhow::anyhow!("the lab's IKE proposal is already chosen"))
}

/// The IKE proposal in force (see [`use_ike_proposal`]).
pub fn ike_proposal() -> &'static str {
    IKE_PROPOSAL_CHOSEN.get().map_or(IKE_PROPOSAL, String::as_str)
}
pub(super) const ESP_PROPOSAL: &str = "aes128-sha256";
/// The plugins a lab charon loads: crypto from openssl, ESP in userspace,
/// addresses and routes from netlink, control over vici.
pub(super) const PLUGINS: &str =
    "random nonce openssl pem pkcs1 x509 pubkey kdf kernel-libipsec kernel-netlink socket-default vici";

/// AP `n`'s address inside its tunnel (n from 1): 250 to a /24, from
/// 10.99.1.0/24 on.
pub fn ap_inner(n: usize) -> String {
    let (block, host) = fleet::block_and_host(n);
    format!("10.99.{}.{host}", block + 1)
}

/// Every AP's inner address: what the servers' CHILD_SAs accept.
pub const INNER_PREFIX: &str = "10.99.0.0/16";

/// Servers A and B (`eth1`, 10.77.0.1 and .2) and `count` APs (`eth0`,
/// 10.77.0.(50 + n)) on one switch, each AP in a namespace of its own;
/// the tunnels' inner addresses on `lo` (10.99.0.1 on both servers,
/// 10.99.1.n on AP n).
pub struct ApLab {
    pub lab: crate::lab::Lab,
    pub a: String,
    pub b: String,
    pub switch: String,
    /// AP n (1-based) is `aps[n - 1]`.
    pub aps: Vec<String>,
    /// AP n's own address (its IKE source): `own[n - 1]`.
    pub own: Vec<String>,
    /// The NAT router the APs sit behind, if they do.
    pub nat: Option<String>,
}

impl ApLab {
    pub fn new(count: u8) -> Result<Self> {
        let (mut lab, a, b, switch) = crate::lab::two_servers_on_a_switch("eth1")?;
        lab.address(&a, "eth1", "10.77.0.1/24")?;
        lab.address(&b, "eth1", "10.77.0.2/24")?;
        for server in [&a, &b] {
            lab.address(server, "lo", &format!("{SERVER_INNER}/32"))?;
        }
        let mut aps = Vec::new();
        for n in 1..=count {
            let ap = lab.namespace(&format!("ap{n}"), false)?;
            let port = format!("ap{n}-port");
            lab.veth((&ap, "eth0"), (&switch, &port))?;
            crate::lab::ip(&["-n", &switch, "link", "set", &port, "master", "br0"])?;
            lab.address(&ap, "eth0", &format!("{}/24", ap_address(n)))?;
            lab.address(&ap, "lo", &format!("{}/32", ap_inner(n.into())))?;
            aps.push(ap);
        }
        Ok(Self {
            lab,
            a,
            b,
            switch,
            aps,
            own: (1..=count).map(ap_address).collect(),
            nat: None,
        })
    }

    /// The same servers, with `count` APs behind one Linux NAT router: the
    /// router's public side is [`NAT_PUBLIC`] on the servers' switch, its
    /// private side a bridge with AP n at 192.168.77.(10 + n). It
    /// masquerades with the source ports rewritten (to 40000-49999), as a
    /// carrier-grade or home NAT does, so the controller sees every AP as
    /// NAT_PUBLIC with a port it cannot guess, and the NAT's connection
    /// tracking forwards back only what matches a mapping.
    pub fn behind_nat(count: u8) -> Result<Self> {
        let mut lab = Self::new(0)?;
        let nat = lab.lab.namespace("nat", false)?;
        lab.lab.veth((&nat, "eth0"), (&lab.switch, "nat-port"))?;
        crate::lab::ip(&["-n", &lab.switch, "link", "set", "nat-port", "master", "br0"])?;
        lab.lab.address(&nat, "eth0", &format!("{NAT_PUBLIC}/24"))?;
        lab.lab.bridge(&nat, "lan", &[])?;
        lab.lab.address(&nat, "lan", "192.168.77.1/24")?;
        crate::lab::sysctl(&nat, "net.ipv4.ip_forward", "1")?;
        for protocol in ["udp", "tcp"] {
            let status = Command::new("ip")
                .args(["netns", "exec", &nat, "iptables", "-t", "nat", "-A", "POSTROUTING"])
                .args(["-o", "eth0", "-p", protocol, "-j", "MASQUERADE"])
                .args(["--to-ports", "40000-49999", "--random"])
                .status()
                .context("iptables (cargo xtask prereqs installs it)")?;
            if !status.success() {
                bail!("iptables MASQUERADE in the NAT namespace failed ({status}): the kernel needs nf_nat");
            }
        }
        for n in 1..=count {
            let ap = lab.lab.namespace(&format!("ap{n}"), false)?;
            let port = format!("ap{n}-port");
            lab.lab.veth((&ap, "eth0"), (&nat, &port))?;
            crate::lab::ip(&["-n", &nat, "link", "set", &port, "master", "lan"])?;
            let own = format!("192.168.77.{}", 10 + u16::from(n));
            lab.lab.address(&ap, "eth0", &format!("{own}/24"))?;
            lab.lab.address(&ap, "lo", &format!("{}/32", ap_inner(n.into())))?;
            crate::lab::ip(&["-n", &ap, "route", "add", "default", "via", "192.168.77.1"])?;
            lab.aps.push(ap);
            lab.own.push(own);
        }
        lab.nat = Some(nat);
        Ok(lab)
    }
}

/// The NAT router's public address in [`ApLab::behind_nat`]: every AP
/// behind it, as the controller sees them.
pub const NAT_PUBLIC: &str = "10.77.0.200";

impl ApLab {
    /// The VIP on server A (`eth1`), as a master would hold it.
    pub fn vip_on_a(&self) -> Result<()> {
        crate::lab::ip(&["-n", &self.a, "addr", "add", &format!("{VIP}/24"), "dev", "eth1"])
            .map(|_| ())
    }

    /// charon responders on both servers (files under `dir`), for `vip`.
    pub fn responders(&self, dir: &Path) -> Result<(Charon, Charon)> {
        let a = Charon::start(&self.a, &dir.join("charon-a"))?;
        let b = Charon::start(&self.b, &dir.join("charon-b"))?;
        for charon in [&a, &b] {
            charon.load(&responder_conf(VIP))?;
        }
        Ok((a, b))
    }

    /// Every AP's initiator (`ike` settings) to the VIP, one charon per
    /// namespace carrying that namespace's APs; returns once every AP's
    /// tunnel works (or says which did not, with its charon's log).
    pub fn start_aps(&self, dir: &Path, ike: ApIke) -> Result<Vec<Charon>> {
        // A fleet comes up one namespace at a time, as a fleet does over
        // its day (5 000 initiators at once only retransmit into each
        // other: 3 000 up after 120 s), each namespace's charon counted
        // from its own statistics; one probe round at the end.
        let fleet = self.aps.len() > SMALL_LAB;
        let mut charons = Vec::new();
        for (namespace, aps) in self.by_namespace() {
            let own: Vec<(usize, &str)> = aps.iter().map(|n| (*n, self.own[n - 1].as_str())).collect();
            let name = if aps.len() == 1 {
                format!("ap{}", aps[0])
            } else {
                namespace.rsplit('-').next().unwrap_or(namespace).to_string()
            };
            let charon = Charon::start(namespace, &dir.join(name))?;
            charon.load(&initiator_conf(&own, VIP, ike))?;
            if fleet {
                let limit = Duration::from_secs(20) + Duration::from_millis(100) * aps.len() as u32;
                crate::daemon::wait_until(limit, "every AP of the namespace with an IKE_SA and its CHILD_SA", || {
                    charon.established() == Some(aps.len())
                })
                .with_context(|| {
                    format!(
                        "{namespace}: {:?} of {} established; its charon's log ends:\n{}",
                        charon.established(),
                        aps.len(),
                        charon.log().lines().rev().take(30).collect::<Vec<_>>().join("\n")
                    )
                })?;
            }
            charons.push(charon);
        }
        if fleet {
            let limit = Duration::from_secs(20) + Duration::from_millis(20) * self.aps.len() as u32;
            let probes = TunnelProbes::start(self)?;
            probes.arm(Instant::now());
            let all: Vec<usize> = (1..=self.aps.len()).collect();
            let answered = probes.wait_answered(&all, limit);
            let missing: Vec<usize> = answered.iter().enumerate().filter(|(_, a)| !**a).map(|(i, _)| i + 1).collect();
            if !missing.is_empty() {
                bail!(
                    "{} of {} APs' tunnels did not answer within {limit:?} (first: AP {:?})",
                    missing.len(),
                    self.aps.len(),
                    &missing[..missing.len().min(10)]
                );
            }
            return Ok(charons);
        }
        for (i, namespace) in self.aps.iter().enumerate() {
            let n = i + 1;
            crate::daemon::wait_until(Duration::from_secs(20), "an AP's tunnel to the VIP", || {
                tunnel_works(namespace, n, Duration::from_secs(1))
            })
            .with_context(|| format!("AP {n}:\n{}", charons[i].log()))?;
        }
        Ok(charons)
    }

    /// The namespaces in order, each with its APs (1-based).
    pub fn by_namespace(&self) -> Vec<(&str, Vec<usize>)> {
        let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, namespace) in self.aps.iter().enumerate() {
            match groups.last_mut() {
                Some((last, aps)) if *last == namespace.as_str() => aps.push(i + 1),
                _ => groups.push((namespace, vec![i + 1])),
            }
        }
        groups
    }
}

/// Up to this many APs, each AP's tunnel is checked with a ping of its own.
const SMALL_LAB: usize = 45;

/// AP `n`'s address on the controller's segment.
pub fn ap_address(n: u8) -> String {
    format!("10.77.0.{}", 50 + u16::from(n))
}

/// The lab's VIP in the AP scenarios.
pub const VIP: &str = "10.77.0.100";

/// `wimark-ha ike-initiate`'s config for the lab's responders (the same
/// connection as [`responder_conf`], in the adapter's TOML).
pub fn adapter_toml(vici: &str) -> String {
    format!(
        "vici = \"{vici}\"\nchild = \"tunnel\"\n\n[connection]\nlocal_addrs = [\"{VIP}\"]\nversion = 2\nencap = true\nmobike = false\nproposals = [\"{proposal}\"]\n[connection.local]\nauth = \"psk\"\nid = \"{SERVER_ID}\"\n[connection.remote]\nauth = \"psk\"\n[connection.children.tunnel]\nlocal_ts = [\"{SERVER_INNER}/32\"]\nremote_ts = [\"{INNER_PREFIX}\"]\nesp_proposals = [\"{ESP_PROPOSAL}\"]\n",
        proposal = ike_proposal()
    )
}

/// The AP table sync's key for a lab's daemons, in `dir`: 24 bytes, mode
/// 0600 as the daemon requires.
pub fn write_sync_key(dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let key = dir.join("ap-sync.key");
    std::fs::write(&key, "lab-key-0123456789abcdef\n")?;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    Ok(key)
}

/// A thread in a namespace until the flag is set.
pub fn spawn_in_netns(
    namespace: &str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    body: impl FnOnce(std::sync::Arc<std::sync::atomic::AtomicBool>) + Send + 'static,
) -> Result<thread::JoinHandle<()>> {
    let path = crate::lab::netns_path(namespace);
    Ok(thread::Builder::new()
        .name(format!("netns {namespace}"))
        .spawn(move || {
            if crate::lab::enter_netns(&path).is_ok() {
                body(stop);
            }
        })?)
}
