//! The failover journal: every VRRP transition, container switch and "APs
//! back" measurement, one JSON line each, under the state directory
//! (`/var/lib/wimark-ha/history.jsonl`), so that history survives restarts.
//!
//! Owns: the file format, its size bound (one rotation to `history.jsonl.1`)
//! and crash-safe reading (a torn or damaged line is skipped and counted,
//! never fatal). Must not: decide anything from what it reads; it is written
//! off the engine thread, never on the fast path.

use std::{
    fs::{File, OpenOptions},
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::records::{SwitchRecord, TransitionRecord};

const FILE: &str = "history.jsonl";
const ROTATED: &str = "history.jsonl.1";
/// Past this size the file is rotated: the journal never exceeds twice it.
pub const MAX_BYTES: u64 = 1 << 20;

/// One journal line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// A VRRP state change with the fast path's timings.
    Transition {
        instance: String,
        record: TransitionRecord,
    },
    /// A container role switch with its timings and problems.
    Containers {
        instance: String,
        record: SwitchRecord,
    },
    /// When the APs came back after a takeover: one entry per takeover.
    ApsBack {
        instance: String,
        at_unix_ms: u64,
        /// From the takeover decision until every expected AP was back (or
        /// the last one that came, when some are missing). Journals written
        /// before `per_ap` existed mean the first AP packet by it.
        after_ms: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        per_ap: Option<crate::recovery::ApsBackDetail>,
    },
    /// The APs the new master reached out to after a takeover.
    ApRecovery {
        instance: String,
        at_unix_ms: u64,
        record: crate::recovery::RecoveryRecord,
    },
    /// A fast takeover that was false: the master declared down spoke again
    /// within Master_Down_Interval (it was late, not dead).
    FalseTakeover {
        instance: String,
        at_unix_ms: u64,
        peer: std::net::IpAddr,
        /// How long it was silent, by the kernel's stamps.
        #[serde(rename = "gap_us", with = "crate::clock::micros")]
        gap: Option<std::time::Duration>,
        /// The detection window it beat, and the one in force after.
        #[serde(rename = "window_us", with = "crate::clock::micros", default)]
        window: Option<std::time::Duration>,
        #[serde(rename = "window_after_us", with = "crate::clock::micros", default)]
        window_after: Option<std::time::Duration>,
    },
}

impl Entry {
    pub fn instance(&self) -> &str {
        match self {
            Entry::Transition { instance, .. }
            | Entry::Containers { instance, .. }
            | Entry::ApsBack { instance, .. }
            | Entry::ApRecovery { instance, .. }
            | Entry::FalseTakeover { instance, .. } => instance,
        }
    }

    pub fn at_unix_ms(&self) -> u64 {
        match self {
            Entry::Transition { record, .. } => record.at_unix_ms,
            Entry::Containers { record, .. } => record.at_unix_ms,
            Entry::ApsBack { at_unix_ms, .. }
            | Entry::ApRecovery { at_unix_ms, .. }
            | Entry::FalseTakeover { at_unix_ms, .. } => *at_unix_ms,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct JournalError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// The journal's writer.
pub struct Journal {
    dir: PathBuf,
    file: File,
    size: u64,
}

impl Journal {
    /// Opens (creating) the journal in `dir` for appending.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        let error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| JournalError { path, source }
        };
        std::fs::create_dir_all(dir).map_err(error(dir))?;
        let path = dir.join(FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(error(&path))?;
        let size = file.metadata().map_err(error(&path))?.len();
        let mut journal = Self {
            dir: dir.to_path_buf(),
            file,
            size,
        };
        // A crash mid-write left a torn last line: end it, so that it stays
        // one damaged line and the next entry starts whole.
        if size > 0 && !ends_with_newline(&path).map_err(error(&path))? {
            journal.file.write_all(b"\n").map_err(error(&path))?;
            journal.size += 1;
        }
        Ok(journal)
    }

    /// Appends one entry as one write of one line, then syncs it: after a
    /// crash the file ends with whole lines, or with one torn line that
    /// reading skips.
    pub fn append(&mut self, entry: &Entry) -> Result<(), JournalError> {
        let path = self.dir.join(FILE);
        if self.size >= MAX_BYTES {
            std::fs::rename(&path, self.dir.join(ROTATED)).map_err(|source| JournalError {
                path: path.clone(),
                source,
            })?;
            *self = Self::open(&self.dir)?;
        }
        let mut line = serde_json::to_vec(entry).map_err(|e| JournalError {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        let result = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        result.map_err(|source| JournalError { path, source })?;
        self.size += line.len() as u64;
        Ok(())
    }
}

fn ends_with_newline(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = File::open(path)?;
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// What reading the journal found.
#[derive(Debug, Default)]
pub struct JournalRead {
    /// Oldest first.
    pub entries: Vec<Entry>,
    /// Lines that were not whole entries (a torn last line after a crash).
    pub damaged: usize,
}

/// Reads the journal in `dir`, rotated part first. A missing journal is an
/// empty one.
pub fn read(dir: &Path) -> Result<JournalRead, JournalError> {
    let mut read = JournalRead::default();
    for name in [ROTATED, FILE] {
        let path = dir.join(name);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(JournalError { path, source }),
        };
        for line in BufReader::new(file).split(b'\n') {
            let line = line.map_err(|source| JournalError {
                path: path.clone(),
                source,
            })?;
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice(&line) {
                Ok(entry) => read.entries.push(entry),
                Err(_) => read.damaged += 1,
            }
        }
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("wimark-ha-history-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn transition(at: u64) -> Entry {
        Entry::Transition {
            instance: "WIM1".to_string(),
            record: TransitionRecord {
                at_unix_ms: at,
                from: crate::records::State::Backup,
                to: crate::records::State::Master,
                reason: crate::records::Reason::FastDetect,
                silence: Some(std::time::Duration::from_micros(3000)),
                vip_added: Some(std::time::Duration::from_micros(50)),
                garp_sent: Some(std::time::Duration::from_micros(90)),
            },
        }
    }

    #[test]
    fn entries_survive_reopening_and_a_torn_line_is_skipped() {
        let dir = dir("torn");
        let mut journal = Journal::open(&dir).expect("open");
        journal.append(&transition(1)).expect("append");
        journal
            .append(&Entry::ApsBack {
                instance: "WIM1".to_string(),
                at_unix_ms: 2,
                after_ms: 4.5,
                per_ap: None,
            })
            .expect("append");
        drop(journal);
        // A crash in the middle of a write.
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.join(FILE))
            .expect("reopen");
        file.write_all(b"{\"kind\":\"transition\",\"inst")
            .expect("torn");
        drop(file);
        let read = read(&dir).expect("read");
        assert_eq!(read.entries.len(), 2);
        assert_eq!(read.entries[0], transition(1));
        assert_eq!(read.damaged, 1);
        // Appending after the torn line still gives whole entries.
        let mut journal = Journal::open(&dir).expect("open again");
        journal.append(&transition(3)).expect("append");
        let read = super::read(&dir).expect("read");
        assert_eq!(read.entries.len(), 3, "nothing after the torn line is lost");
        assert_eq!(read.entries[2], transition(3));
        assert_eq!(read.damaged, 1);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_journal_is_bounded_by_one_rotation() {
        let dir = dir("bound");
        let mut journal = Journal::open(&dir).expect("open");
        let line = serde_json::to_vec(&transition(0)).expect("json").len() as u64 + 1;
        let count = 2 * MAX_BYTES / line + 50;
        for at in 0..count {
            journal.append(&transition(at)).expect("append");
        }
        let total: u64 = [FILE, ROTATED]
            .iter()
            .map(|f| std::fs::metadata(dir.join(f)).map_or(0, |m| m.len()))
            .sum();
        assert!(total <= 2 * MAX_BYTES + line, "{total} bytes");
        let read = read(&dir).expect("read");
        assert_eq!(read.damaged, 0);
        // The newest are kept, in order.
        let last: Vec<u64> = read
            .entries
            .iter()
            .rev()
            .take(3)
            .map(Entry::at_unix_ms)
            .collect();
        assert_eq!(last, vec![count - 1, count - 2, count - 3]);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_missing_journal_is_empty() {
        let read = read(&dir("missing")).expect("read");
        assert!(read.entries.is_empty() && read.damaged == 0);
    }
}
