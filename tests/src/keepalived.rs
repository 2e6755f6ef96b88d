//! Debian's keepalived as the reference VRRP peer, run inside a lab
//! namespace with its own config, pid files and a notify script that
//! records every state it reports.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use anyhow::{Context as _, Result};

use crate::lab::in_netns;

pub struct Keepalived {
    child: Option<Child>,
    dir: PathBuf,
    namespace: String,
    config: String,
}

/// A `vrrp_instance` body: the vendor's settings with lab addresses.
pub struct Instance<'a> {
    pub version: u8,
    pub priority: u8,
    /// keepalived's `advert_int` (seconds, fractions allowed for v3).
    pub advert_int: &'a str,
    pub auth_pass: Option<&'a str>,
    pub vrid: u8,
    pub vip: &'a str,
    pub nopreempt: bool,
}

impl Instance<'static> {
    /// keepalived at its fastest: VRRPv3, advert_int 10 ms, VRID 67, the
    /// lab's VIP, no authentication.
    pub fn v3_10ms(priority: u8) -> Self {
        Self {
            version: 3,
            priority,
            advert_int: "0.01",
            auth_pass: None,
            vrid: 67,
            vip: "10.77.0.100/24",
            nopreempt: false,
        }
    }

    /// The vendor's keepalived.conf (VRRPv2, advert_int 1, auth PASS, VRID
    /// 67) with the lab's VIP, at `priority`.
    pub fn vendor(priority: u8) -> Self {
        Self {
            version: 2,
            priority,
            advert_int: "1",
            auth_pass: Some("wimark12"),
            vrid: 67,
            vip: "10.77.0.100/24",
            nopreempt: false,
        }
    }
}

impl Keepalived {
    pub fn start(namespace: &str, name: &str, instance: &Instance) -> Result<Self> {
        Self::start_with_blocks(namespace, name, instance, "", "")
    }

    /// The same, with `top` (e.g. a `vrrp_script` block) after
    /// `global_defs` and `inside` (e.g. `track_script { ... }`) in the
    /// `vrrp_instance`.
    pub fn start_with_blocks(
        namespace: &str,
        name: &str,
        instance: &Instance,
        top: &str,
        inside: &str,
    ) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("wimark-ha-keepalived-{namespace}-{name}"));
        std::fs::create_dir_all(&dir)?;
        let notify = dir.join("notify.sh");
        std::fs::write(
            &notify,
            format!(
                "#!/bin/sh\necho \"$1 $2 $3 $4\" >> {}\n",
                dir.join("states").display()
            ),
        )?;
        std::fs::set_permissions(&notify, std::fs::Permissions::from_mode(0o755))?;
        let auth = match instance.auth_pass {
            Some(pass) => format!(
                "    authentication {{\n        auth_type PASS\n        auth_pass {pass}\n    }}\n"
            ),
            None => String::new(),
        };
        let config = format!(
            "global_defs {{\n    router_id {name}\n    script_user root\n    vrrp_version {version}\n}}\n{top}\
             vrrp_instance WIM1 {{\n    state BACKUP\n    interface eth1\n    virtual_router_id {vrid}\n    priority {priority}\n    advert_int {advert}\n{nopreempt}{auth}    virtual_ipaddress {{\n        {vip}\n    }}\n    notify {notify}\n{inside}}}\n",
            version = instance.version,
            vrid = instance.vrid,
            priority = instance.priority,
            advert = instance.advert_int,
            nopreempt = if instance.nopreempt { "    nopreempt\n" } else { "" },
            vip = instance.vip,
            notify = notify.display(),
        );
        let path = dir.join("keepalived.conf");
        std::fs::write(&path, &config)?;
        let mut keepalived = Self {
            child: None,
            dir,
            namespace: namespace.to_string(),
            config: path.display().to_string(),
        };
        keepalived.restart()?;
        Ok(keepalived)
    }

    pub fn restart(&mut self) -> Result<()> {
        let dir = self.dir.clone();
        let config = self.config.clone();
        let child = in_netns(&self.namespace, move || -> Result<Child> {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("log"))?;
            Command::new("keepalived")
                .args([
                    "--dont-fork",
                    "--log-console",
                    "--vrrp",
                    "--use-file",
                    &config,
                ])
                .arg(format!("--pid={}", dir.join("keepalived.pid").display()))
                .arg(format!("--vrrp_pid={}", dir.join("vrrp.pid").display()))
                .arg(format!(
                    "--checkers_pid={}",
                    dir.join("checkers.pid").display()
                ))
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting keepalived (Debian package keepalived)")
        })??;
        self.child = Some(child);
        Ok(())
    }

    /// The states its notify script reported, in order ("MASTER", "BACKUP"...).
    pub fn states(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("states"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
            .collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Sends `signal` to keepalived's parent process (SIGTERM: it resigns
    /// with priority 0 and removes its VIP).
    pub fn signal(&mut self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: plain kill(2) of our child.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    /// The parent process (its VRRP child is a child of it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills keepalived and its VRRP child at once, as a crash would.
    pub fn kill(&mut self) {
        for pid_file in ["vrrp.pid", "keepalived.pid"] {
            if let Ok(pid) = std::fs::read_to_string(self.dir.join(pid_file)) {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    // SAFETY: plain kill(2) of a process we started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
