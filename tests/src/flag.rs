//! A health check the lab fails on demand: a flag file whose presence makes
//! `test ! -e FLAG` fail — the tracked script of wimark-ha's
//! `[[instance.track]]` and of keepalived's `vrrp_script` alike.

use std::path::PathBuf;

pub struct CheckFlag(PathBuf);

impl CheckFlag {
    pub fn new(tag: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("wimark-ha-track-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        CheckFlag(path)
    }

    /// The check fails from now on.
    pub fn raise(&self) {
        std::fs::write(&self.0, "down").expect("flag");
    }

    /// The check passes again.
    pub fn lower(&self) {
        std::fs::remove_file(&self.0).expect("flag");
    }

    /// The check's shell command: exit 0 unless the flag is there.
    pub fn check(&self) -> String {
        format!("test ! -e {}", self.0.display())
    }

    /// wimark-ha's `[[instance.track]]` running the check every 100 ms,
    /// weight -100, fall 2, rise 2.
    pub fn tracker(&self) -> String {
        format!(
            "[[instance.track]]\nname = \"chk_service\"\nscript = [\"/bin/sh\", \"-c\", \"{}\"]\ninterval = \"100ms\"\nfall = 2\nrise = 2\nweight = -100\n",
            self.check()
        )
    }

    /// keepalived's `vrrp_script chk_service` (every second, weight -100,
    /// fall 1, rise 1) and the `track_script` block that uses it.
    pub fn keepalived_blocks(&self) -> (String, String) {
        (
            format!(
                "vrrp_script chk_service {{\n    script \"/bin/sh -c '{}'\"\n    interval 1\n    weight -100\n    fall 1\n    rise 1\n}}\n",
                self.check()
            ),
            "    track_script {\n        chk_service\n    }\n".to_string(),
        )
    }
}

impl Drop for CheckFlag {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
