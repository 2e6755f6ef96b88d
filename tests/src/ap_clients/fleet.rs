//! The lab at fleet size: many APs to a namespace, each AP its own
//! address, IKE identity and IKE_SA in that namespace's one charon.
//!
//! One namespace and one bridge port per AP stops at the bridge's 1 023
//! ports and costs a charon per AP; here a namespace holds up to
//! [`APS_PER_NAMESPACE`] APs: AP n is 10.77.(k+1).h outside and
//! 10.99.(k+1).h inside its tunnel (k = (n-1) / 250, h = (n-1) % 250 + 1),
//! so 5 000 APs are 20 namespaces, 20 charons and 20 bridge ports. Like
//! remote APs, they sit one routed hop away: namespace k is 10.77.0.(150+k)
//! on the servers' switch and the servers route 10.77.(k+1).0/24 to it. On
//! one segment the servers would need a neighbour entry per AP, and the
//! kernel's neighbour table is one for all namespaces (gc_thresh3 1 024 by
//! default): at a few hundred APs it already dropped the first IKE packet
//! to some APs (a 4 s retransmit). The servers are 10.77.0.1 and .2, the
//! VIP 10.77.0.100, as in the small lab.
//!
//! What one AP costs the lab: two addresses, one connection in its
//! namespace's charon (an IKE_SA and a CHILD_SA on each side, ESP in
//! userspace), one UDP socket for its probe; measured per size in
//! docs/benchmarks.md.

use std::io::Write as _;

use super::*;

/// APs in one namespace (one /24 each, outside and inside the tunnels).
pub const APS_PER_NAMESPACE: usize = 250;

/// AP `n` (from 1): its namespace's index and its host number there.
pub(super) fn block_and_host(n: usize) -> (usize, usize) {
    let i = n.saturating_sub(1);
    (i / APS_PER_NAMESPACE, i % APS_PER_NAMESPACE + 1)
}

/// AP `n`'s address on the servers' segment in the fleet lab.
pub fn fleet_address(n: usize) -> String {
    let (block, host) = block_and_host(n);
    format!("10.77.{}.{host}", block + 1)
}

impl ApLab {
    /// Servers A and B (10.77.0.1 and .2 /16 on `eth1`) and `count` APs,
    /// [`APS_PER_NAMESPACE`] to a namespace, on one switch.
    pub fn fleet(count: usize) -> Result<Self> {
        let blocks = count.div_ceil(APS_PER_NAMESPACE);
        if blocks > 50 {
            bail!("at most {} APs: 50 namespaces of {APS_PER_NAMESPACE}", 50 * APS_PER_NAMESPACE);
        }
        let mut lab = Self::new(0)?;
        let mut aps = Vec::with_capacity(count);
        let mut own = Vec::with_capacity(count);
        for block in 0..blocks {
            let namespace = lab.lab.namespace(&format!("fleet{block}"), false)?;
            let port = format!("fleet{block}-port");
            lab.lab.veth((&namespace, "eth0"), (&lab.switch, &port))?;
            crate::lab::ip(&["-n", &lab.switch, "link", "set", &port, "master", "br0"])?;
            let hop = format!("10.77.0.{}", 150 + block);
            lab.lab.address(&namespace, "eth0", &format!("{hop}/24"))?;
            let prefix = format!("10.77.{}.0/24", block + 1);
            for server in [&lab.a, &lab.b] {
                crate::lab::ip(&["-n", server, "route", "add", &prefix, "via", &hop])?;
            }
            let first = block * APS_PER_NAMESPACE + 1;
            let last = (first + APS_PER_NAMESPACE - 1).min(count);
            // Hundreds of addresses: one `ip -batch` per namespace.
            let mut batch = String::new();
            for n in first..=last {
                batch += &format!("addr add {}/32 dev lo\n", fleet_address(n));
                batch += &format!("addr add {}/32 dev lo\n", ap_inner(n));
                aps.push(namespace.clone());
                own.push(fleet_address(n));
            }
            ip_batch(&namespace, &batch)?;
        }
        lab.aps = aps;
        lab.own = own;
        Ok(lab)
    }
}

/// Runs `ip -n namespace -batch -` with `commands` on stdin.
fn ip_batch(namespace: &str, commands: &str) -> Result<()> {
    let mut child = Command::new("ip")
        .args(["-n", namespace, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("ip -batch")?;
    child
        .stdin
        .take()
        .context("ip -batch stdin")?
        .write_all(commands.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "ip -n {namespace} -batch: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Raises this process's open-file limit to its hard limit: the probes
/// hold one socket per AP.
pub fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
