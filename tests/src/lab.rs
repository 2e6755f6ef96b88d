//! Throwaway network-namespace labs: "server A", "server B", "an AP", each a
//! namespace of its own, wired with veth pairs (and a bridge namespace when
//! more than two must share a segment).
//!
//! Names are unique per process and per lab (`wha-<pid>-<n>-<role>`), so tests
//! run in parallel; a [`Lab`] deletes its namespaces on drop (and with them
//! every veth and XDP program in them), and the first lab of a process sweeps
//! namespaces left by processes that no longer exist.

use std::{
    fs,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Once,
    },
    thread,
};

use anyhow::{bail, Context as _, Result};

const PREFIX: &str = "wha-";
const NETNS_DIR: &str = "/run/netns";
static NEXT_LAB: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// Runs `ip` with `args`; an error carries its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (iproute2)")?;
    if !output.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Deletes lab namespaces whose creating process is gone.
pub fn sweep_stale_namespaces() {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

/// A set of namespaces that exist as long as this value does.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
}

impl Lab {
    pub fn new() -> Result<Self> {
        SWEEP.call_once(sweep_stale_namespaces);
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        Ok(Self {
            prefix: format!("{PREFIX}{}-{n}", std::process::id()),
            namespaces: Vec::new(),
        })
    }

    /// Creates a namespace with `lo` up and IPv6 autoconfiguration off (no
    /// router solicitations or DAD probes to spoil exact counts), unless
    /// `ipv6` is wanted.
    pub fn namespace(&mut self, role: &str, ipv6: bool) -> Result<String> {
        let name = format!("{}-{role}", self.prefix);
        ip(&["netns", "add", &name])?;
        self.namespaces.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        let value = if ipv6 { "0" } else { "1" };
        for key in ["all", "default"] {
            sysctl(&name, &format!("net.ipv6.conf.{key}.disable_ipv6"), value)?;
            if ipv6 {
                // Link-local addresses usable at once (no DAD wait).
                sysctl(&name, &format!("net.ipv6.conf.{key}.accept_dad"), "0")?;
            }
        }
        Ok(name)
    }

    /// A veth pair from `left` (namespace, interface) to `right`, both up.
    pub fn veth(&self, left: (&str, &str), right: (&str, &str)) -> Result<()> {
        ip(&[
            "link", "add", "name", left.1, "netns", left.0, "type", "veth", "peer", "name",
            right.1, "netns", right.0,
        ])?;
        ip(&["-n", left.0, "link", "set", left.1, "up"])?;
        ip(&["-n", right.0, "link", "set", right.1, "up"])?;
        Ok(())
    }

    /// A bridge `name` in `namespace`, up, with `ports` enslaved.
    pub fn bridge(&self, namespace: &str, name: &str, ports: &[&str]) -> Result<()> {
        ip(&["-n", namespace, "link", "add", name, "type", "bridge"])?;
        ip(&["-n", namespace, "link", "set", name, "up"])?;
        for port in ports {
            ip(&["-n", namespace, "link", "set", port, "master", name])?;
        }
        Ok(())
    }

    pub fn address(&self, namespace: &str, interface: &str, cidr: &str) -> Result<()> {
        ip(&["-n", namespace, "addr", "add", cidr, "dev", interface])
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in self.namespaces.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &name]) {
                eprintln!("lab cleanup: {e}");
            }
        }
    }
}

/// Sets `key` (dotted, as sysctl(8) names it) to `value` in `namespace`.
pub fn sysctl(namespace: &str, key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let setting = format!("{value}\n");
    let key = key.to_string();
    in_netns(namespace, move || {
        fs::write(&path, setting).with_context(|| format!("sysctl {key}"))
    })?
}

/// Runs `f` on a new thread that has entered `namespace` (a netns is per
/// thread, so the caller's thread is never moved).
pub fn in_netns<T: Send + 'static>(
    namespace: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let path = format!("{NETNS_DIR}/{namespace}");
    let handle = thread::Builder::new()
        .name(format!("netns {namespace}"))
        .spawn(move || -> Result<T> {
            enter_netns(&path)?;
            Ok(f())
        })
        .context("spawning a netns thread")?;
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("thread in netns {namespace} panicked"))?
}

/// Moves the calling thread into the namespace at `path`.
pub fn enter_netns(path: &str) -> Result<()> {
    let file = fs::File::open(path).with_context(|| format!("opening {path}"))?;
    use std::os::fd::AsRawFd as _;
    // SAFETY: valid fd; CLONE_NEWNET affects only this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("setns {path}"));
    }
    Ok(())
}

/// The path of a namespace for [`enter_netns`].
pub fn netns_path(namespace: &str) -> String {
    format!("{NETNS_DIR}/{namespace}")
}

/// Servers A and B with `interface` each on its own port (`a-port`,
/// `b-port`) of a bridge `br0` in a third namespace (the switch), no
/// addresses: a server's link going down leaves the other's carrier up, and
/// a port taken out of the bridge cuts the path with every carrier up.
/// Returns (lab, a, b, switch).
pub fn two_servers_on_a_switch(interface: &str) -> Result<(Lab, String, String, String)> {
    crate::require_root("a two-server lab with a switch");
    let mut lab = Lab::new()?;
    let a = lab.namespace("a", false)?;
    let b = lab.namespace("b", false)?;
    let sw = lab.namespace("sw", false)?;
    lab.veth((&a, interface), (&sw, "a-port"))?;
    lab.veth((&b, interface), (&sw, "b-port"))?;
    lab.bridge(&sw, "br0", &["a-port", "b-port"])?;
    Ok((lab, a, b, sw))
}

/// Server A and server B joined by a veth (`eth1` on both sides), IPv6 off,
/// and with `addresses`, 10.77.0.1/24 on A and 10.77.0.2/24 on B: the lab
/// most tests need. Fails with what is missing when not root.
pub fn two_servers(addresses: bool) -> Result<(Lab, String, String)> {
    crate::require_root("a two-server lab");
    let mut lab = Lab::new()?;
    let a = lab.namespace("a", false)?;
    let b = lab.namespace("b", false)?;
    lab.veth((&a, "eth1"), (&b, "eth1"))?;
    if addresses {
        lab.address(&a, "eth1", "10.77.0.1/24")?;
        lab.address(&b, "eth1", "10.77.0.2/24")?;
    }
    Ok((lab, a, b))
}

/// A `stress-ng` keeping every core busy in `namespace`, killed on drop.
pub struct Stress(Child);

impl Drop for Stress {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn stress(namespace: &str) -> Result<Stress> {
    in_netns(namespace, || {
        Command::new("stress-ng")
            .args(["--cpu", "0", "--cpu-method", "matrixprod", "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    })?
    .map(Stress)
    .context("stress-ng (Debian package stress-ng)")
}

