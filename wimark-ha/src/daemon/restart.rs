//! Restart in place (`wimark-ha restart`, `[daemon] restart_hold`): what
//! the stopping process leaves for the starting one, and the exec between.
//!
//! The stopping process sends each master instance's last advert with a Max
//! Adver Int of a third of the hold (the peer waits; see
//! `vrrp::hold_interval`), keeps the VIPs and containers, writes
//! `restart-hold.json` in the state directory and executes its own binary
//! again (the one on disk now: an upgrade takes effect). The starting process
//! takes the file (one use), resumes mastership of each instance still
//! configured alike whose VIPs are all still there, and removes the VIPs of
//! any other held instance — a held VIP is never left without an owner.
//!
//! Owns: the hold file and the exec. Must not: decide VRRP states (the
//! engine and the state machine do).

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::{clock::unix_ms, config::InstanceConfig, vip::InterfaceInfo};

const FILE: &str = "restart-hold.json";

/// One instance that was master when the daemon restarted in place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub instance: String,
    pub interface: String,
    pub vrid: u8,
    pub virtual_ips: Vec<IpAddr>,
    /// CLOCK_REALTIME ms until which the peer waits for us.
    pub until_unix_ms: u64,
}

impl Held {
    /// Whether `config` on `interface` may resume this mastership: the same
    /// instance, VRID and VIPs, all of which are still on the interface,
    /// and the peer still waiting.
    pub fn resumable_by(&self, config: &InstanceConfig, interface: &InterfaceInfo) -> bool {
        let vips: Vec<IpAddr> = config.virtual_ips.iter().map(|v| v.address).collect();
        self.instance == config.name
            && self.interface == config.interface
            && self.vrid == config.vrid
            && self.virtual_ips == vips
            && vips
                .iter()
                .all(|v| interface.addresses.iter().any(|a| a.address == *v))
            && unix_ms() < self.until_unix_ms
    }
}

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// Written by the stopping process, synced: the next one must find it.
pub fn leave(state_dir: &Path, held: &[Held]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let path = path(state_dir);
    let mut file =
        std::fs::File::create(&path).with_context(|| format!("writing {}", path.display()))?;
    file.write_all(&serde_json::to_vec(held)?)?;
    file.sync_all()?;
    Ok(())
}

/// Taken by the starting process: read and removed. A damaged file is
/// reported and counts as none (the VIPs are then stale, and removed).
pub fn take(state_dir: &Path) -> Vec<Held> {
    let path = path(state_dir);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!("{}: {e}; starting without a restart hold", path.display());
            return Vec::new();
        }
    };
    let _ = std::fs::remove_file(&path);
    serde_json::from_slice(&text).unwrap_or_else(|e| {
        tracing::warn!("{}: {e}; starting without a restart hold", path.display());
        Vec::new()
    })
}

/// Replaces this process with the binary at its own path — the new one if
/// it was upgraded — with the same arguments and environment. Returns only
/// if the exec failed.
pub fn exec_self() -> anyhow::Error {
    use std::os::unix::process::CommandExt as _;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return anyhow::Error::new(e).context("finding our own binary"),
    };
    // An upgraded binary leaves /proc/self/exe pointing at "… (deleted)".
    let exe = PathBuf::from(
        exe.to_string_lossy()
            .trim_end_matches(" (deleted)")
            .to_string(),
    );
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    let error = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .exec();
    anyhow::Error::new(error).context(format!("executing {} again", exe.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hold_file_is_taken_once() {
        let dir = std::env::temp_dir().join(format!("wimark-ha-hold-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let held = vec![Held {
            instance: "WIM1".to_string(),
            interface: "eth1".to_string(),
            vrid: 67,
            virtual_ips: vec!["10.0.0.3".parse().expect("ip")],
            until_unix_ms: unix_ms() + 5000,
        }];
        leave(&dir, &held).expect("leave");
        assert_eq!(take(&dir), held);
        assert_eq!(take(&dir), Vec::new(), "one use");
        std::fs::write(path(&dir), "{torn").expect("write");
        assert_eq!(take(&dir), Vec::new(), "a damaged file is no hold");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
