//! The packaged systemd unit, compiled in: what it grants the daemon, so
//! that `doctor` can judge the config against the service it will run as,
//! not against the shell it was started from.
//!
//! Owns: reading the unit's text. Must not: assume the installed unit is
//! the packaged one (an operator's drop-in may change it; doctor says
//! "the packaged unit").

/// `wimark-ha/packaging/wimark-ha.service` as shipped in the package.
pub const PACKAGED: &str = include_str!("../packaging/wimark-ha.service");

/// The capabilities a process holds, as far as removing files goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileCapabilities {
    /// CAP_DAC_OVERRIDE: read, write and search permission checks bypassed.
    pub dac_override: bool,
    /// CAP_FOWNER: owner checks bypassed (a sticky directory's unlink rule).
    pub fowner: bool,
}

impl FileCapabilities {
    /// What the packaged unit's `CapabilityBoundingSet` allows.
    pub fn packaged() -> Self {
        Self::from_bounding_set(PACKAGED)
    }

    /// From a unit's text: the capabilities on its `CapabilityBoundingSet=`
    /// lines (systemd ORs several lines together).
    pub fn from_bounding_set(unit: &str) -> Self {
        let mut caps = Self::default();
        for line in unit.lines() {
            let Some(list) = line.trim().strip_prefix("CapabilityBoundingSet=") else {
                continue;
            };
            for name in list.split_whitespace() {
                match name {
                    "CAP_DAC_OVERRIDE" => caps.dac_override = true,
                    "CAP_FOWNER" => caps.fowner = true,
                    _ => {}
                }
            }
        }
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_packaged_unit_grants_what_the_vendor_hooks_need() {
        let caps = FileCapabilities::packaged();
        assert!(caps.dac_override, "{PACKAGED}");
        assert!(caps.fowner, "{PACKAGED}");
    }

    #[test]
    fn bounding_set_lines_are_read_and_others_ignored() {
        let unit = "AmbientCapabilities=CAP_FOWNER\nCapabilityBoundingSet=CAP_BPF CAP_NET_RAW\n";
        assert_eq!(
            FileCapabilities::from_bounding_set(unit),
            FileCapabilities::default()
        );
        let unit = "CapabilityBoundingSet=CAP_BPF\nCapabilityBoundingSet=CAP_DAC_OVERRIDE\n";
        assert_eq!(
            FileCapabilities::from_bounding_set(unit),
            FileCapabilities {
                dac_override: true,
                fowner: false
            }
        );
    }
}
