//! Whether each `[[hooks.before_promote]] remove` could do its job as the
//! service runs it: root (uid 0, gid 0) holding only the packaged unit's
//! capabilities, not the full root that `doctor` itself may have. The
//! vendor's mongo locks are owned by the container's uid 999 in a directory
//! of its own; root without CAP_DAC_OVERRIDE cannot unlink there, and a
//! failed blocking hook holds the master stack back after a takeover.
//!
//! Owns: the kernel's unlink permission rule, evaluated on metadata.
//! Must not: remove, create or change anything.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use super::{bad, ok, Finding, Status};
use crate::{
    config::{Config, HookAction},
    unit::FileCapabilities,
};

/// Owner, group and mode of a directory or file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owned {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl From<&std::fs::Metadata> for Owned {
    fn from(metadata: &std::fs::Metadata) -> Self {
        Self {
            uid: metadata.uid(),
            gid: metadata.gid(),
            mode: metadata.mode(),
        }
    }
}

const S_ISVTX: u32 = 0o1000;
const WRITE: u32 = 0o2;
const SEARCH: u32 = 0o1;

/// The rwx bits that apply to uid 0 / gid 0 without capabilities
/// (owner, else group, else other), as the kernel's generic_permission.
fn root_bits(dir: Owned) -> u32 {
    if dir.uid == 0 {
        (dir.mode >> 6) & 0o7
    } else if dir.gid == 0 {
        (dir.mode >> 3) & 0o7
    } else {
        dir.mode & 0o7
    }
}

/// Why root holding `caps` could not unlink a file owned by `file_uid`
/// from `dir` (the file's owner unknown when no file exists yet: then the
/// sticky rule is judged for a file root does not own); None when it could.
pub fn unlink_denied(dir: Owned, file_uid: Option<u32>, caps: FileCapabilities) -> Option<String> {
    // may_delete: write and search on the directory (CAP_DAC_OVERRIDE
    // bypasses both for directories).
    let bits = root_bits(dir);
    if bits & (WRITE | SEARCH) != WRITE | SEARCH && !caps.dac_override {
        return Some(format!(
            "directory owned by {}:{} mode {:04o} is not writable by root without CAP_DAC_OVERRIDE",
            dir.uid,
            dir.gid,
            dir.mode & 0o7777
        ));
    }
    // The sticky rule: only the file's or the directory's owner, or
    // CAP_FOWNER.
    if dir.mode & S_ISVTX != 0 && dir.uid != 0 && file_uid != Some(0) && !caps.fowner {
        return Some(format!(
            "sticky directory owned by {}: root may unlink others' files there only with CAP_FOWNER",
            dir.uid
        ));
    }
    None
}

/// The directories a pattern's files live in: the parent of each existing
/// match, or the pattern's literal directory when nothing matches yet.
fn directories(pattern: &str) -> Vec<(PathBuf, Option<u32>)> {
    let mut found: Vec<(PathBuf, Option<u32>)> = glob::glob(pattern)
        .map(|paths| {
            paths
                .flatten()
                .filter_map(|path| {
                    let uid = std::fs::symlink_metadata(&path).ok()?.uid();
                    Some((path.parent()?.to_path_buf(), Some(uid)))
                })
                .collect()
        })
        .unwrap_or_default();
    if found.is_empty() {
        let literal: PathBuf = Path::new(pattern)
            .components()
            .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
            .collect();
        let dir = if literal.as_os_str() == pattern {
            literal.parent().map(Path::to_path_buf).unwrap_or(literal)
        } else {
            literal
        };
        found.push((dir, None));
    }
    found
}

/// One finding per `remove` hook.
pub fn check(config: &Config) -> Vec<Finding> {
    check_with(config, FileCapabilities::packaged())
}

fn check_with(config: &Config, caps: FileCapabilities) -> Vec<Finding> {
    let mut findings = Vec::new();
    for hook in &config.before_promote {
        let HookAction::Remove(pattern) = &hook.action else {
            continue;
        };
        let name = format!("hook remove {pattern}");
        let mut problems = Vec::new();
        let mut checked = 0;
        for (dir, file_uid) in directories(pattern) {
            let metadata = match std::fs::metadata(&dir) {
                Ok(metadata) => metadata,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    problems.push(format!("{}: {e}", dir.display()));
                    continue;
                }
            };
            checked += 1;
            if let Some(why) = unlink_denied(Owned::from(&metadata), file_uid, caps) {
                let file = match file_uid {
                    Some(uid) => format!(" (a file of uid {uid})"),
                    None => String::new(),
                };
                problems.push(format!("{}{file}: {why}", dir.display()));
            }
            if read_only(&dir) {
                problems.push(format!("{}: on a read-only file system", dir.display()));
            }
        }
        problems.sort();
        problems.dedup();
        if !problems.is_empty() {
            findings.push(bad(
                Status::Warn,
                &name,
                format!(
                    "the service (root with only the packaged unit's capabilities) could not remove it: {}",
                    problems.join("; ")
                ),
                "give the directory to root, or add the capability in a drop-in \
                 (systemctl edit wimark-ha: CapabilityBoundingSet= and AmbientCapabilities=)",
            ));
        } else if checked == 0 {
            findings.push(ok(
                &name,
                "its directory does not exist yet: nothing to remove",
            ));
        } else {
            findings.push(ok(
                &name,
                "removable by the service with the packaged unit's capabilities",
            ));
        }
    }
    findings
}

fn read_only(dir: &Path) -> bool {
    nix::sys::statvfs::statvfs(dir)
        .map(|stat| stat.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: FileCapabilities = FileCapabilities {
        dac_override: false,
        fowner: false,
    };
    const UNIT: FileCapabilities = FileCapabilities {
        dac_override: true,
        fowner: true,
    };
    /// What mongo's container leaves: uid 999's directory, 0755.
    const MONGO_DIR: Owned = Owned {
        uid: 999,
        gid: 999,
        mode: 0o40755,
    };

    #[test]
    fn mongo_locks_need_dac_override() {
        let why = unlink_denied(MONGO_DIR, Some(999), NONE).expect("denied without it");
        assert!(why.contains("CAP_DAC_OVERRIDE"), "{why}");
        assert!(why.contains("999:999 mode 0755"), "{why}");
        assert_eq!(unlink_denied(MONGO_DIR, Some(999), UNIT), None);
    }

    #[test]
    fn roots_own_or_group_writable_directory_needs_nothing() {
        let root_dir = Owned {
            uid: 0,
            gid: 0,
            mode: 0o40755,
        };
        assert_eq!(unlink_denied(root_dir, Some(999), NONE), None);
        let group_dir = Owned {
            uid: 999,
            gid: 0,
            mode: 0o40775,
        };
        assert_eq!(unlink_denied(group_dir, Some(999), NONE), None);
        let root_read_only = Owned {
            uid: 0,
            gid: 0,
            mode: 0o40555,
        };
        assert!(unlink_denied(root_read_only, None, NONE).is_some());
    }

    #[test]
    fn a_sticky_directory_needs_fowner_for_others_files() {
        let sticky = Owned {
            uid: 999,
            gid: 999,
            mode: 0o41777,
        };
        let why = unlink_denied(sticky, Some(999), NONE).expect("denied");
        assert!(why.contains("CAP_FOWNER"), "{why}");
        assert_eq!(
            unlink_denied(sticky, Some(0), NONE),
            None,
            "root's own file"
        );
        let only_dac = FileCapabilities {
            dac_override: true,
            fowner: false,
        };
        assert!(unlink_denied(sticky, Some(999), only_dac).is_some());
        assert_eq!(unlink_denied(sticky, Some(999), UNIT), None);
    }

    #[test]
    fn a_pattern_without_matches_is_judged_by_its_directory() {
        let dirs = directories("/nonexistent-wimark/volumes/mongo/*.lock");
        assert_eq!(
            dirs,
            [(PathBuf::from("/nonexistent-wimark/volumes/mongo"), None)]
        );
        let dirs = directories("/nonexistent-wimark/a/mongod.lock");
        assert_eq!(dirs, [(PathBuf::from("/nonexistent-wimark/a"), None)]);
        let dirs = directories("/nonexistent-wimark/*/mongod.lock");
        assert_eq!(dirs, [(PathBuf::from("/nonexistent-wimark"), None)]);
    }
}
