//! The failover journal: every VRRP transition, container switch and "APs
//! back" measurement, one JSON line each, under the state directory
//! (`/var/lib/wimark-ha/history.jsonl`), so that history survives restarts.
//!
//! Owns: the file format, its size bound (one rotation to `history.jsonl.1`,
//! kept on a journal found over it and when reading one), its permissions,
//! crash-safe reading (a torn or damaged line is skipped and counted, never
//! fatal) and running without it when it cannot be written. Must not:
//! decide anything from what it reads, or stop a failover; it is written off
//! the engine thread, never on the fast path.

use std::{
    fs::{File, OpenOptions},
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};

use crate::records::{JournalStatus, SwitchRecord, TransitionRecord};

const FILE: &str = "history.jsonl";
const ROTATED: &str = "history.jsonl.1";
/// Past this size the file is rotated: the journal never exceeds twice it
/// (and a line).
pub const MAX_BYTES: u64 = 1 << 20;
/// Room for the line that takes a file past [`MAX_BYTES`]: a rotated file
/// up to this much longer is one of ours, left whole.
const LINE_SLACK: u64 = 64 << 10;

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
    /// A tracker (`[[instance.track]]`) changed what it adds: its state
    /// then, and the priority in force after.
    Tracker {
        instance: String,
        at_unix_ms: u64,
        tracker: crate::records::TrackerStatus,
        priority: u8,
    },
}

impl Entry {
    pub fn instance(&self) -> &str {
        match self {
            Entry::Transition { instance, .. }
            | Entry::Containers { instance, .. }
            | Entry::ApsBack { instance, .. }
            | Entry::ApRecovery { instance, .. }
            | Entry::FalseTakeover { instance, .. }
            | Entry::Tracker { instance, .. } => instance,
        }
    }

    pub fn at_unix_ms(&self) -> u64 {
        match self {
            Entry::Transition { record, .. } => record.at_unix_ms,
            Entry::Containers { record, .. } => record.at_unix_ms,
            Entry::ApsBack { at_unix_ms, .. }
            | Entry::ApRecovery { at_unix_ms, .. }
            | Entry::FalseTakeover { at_unix_ms, .. }
            | Entry::Tracker { at_unix_ms, .. } => *at_unix_ms,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct JournalError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

fn error_at(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError {
    let path = path.to_path_buf();
    move |source| JournalError { path, source }
}

/// The journal's writer. A journal that cannot be opened or written never
/// stops the daemon: it runs without it, says so in `status` and metrics
/// ([`JournalStatus`]), and tries again at the next entry (a disk that was
/// full may have room now).
pub struct Journal {
    dir: PathBuf,
    file: Option<OpenFile>,
    health: Arc<Mutex<JournalStatus>>,
}

struct OpenFile {
    file: File,
    /// Bytes of whole lines: a failed write is cut back to it.
    size: u64,
}

impl Journal {
    /// Opens (creating) the journal in `dir` for appending; an error if it
    /// cannot be.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        let file = open_file(dir)?;
        Ok(Self {
            file: Some(file),
            ..Self::unopened(dir)
        })
    }

    /// Opens the journal in `dir`, or, if it cannot be opened, a journal
    /// that reports why (logged once) and retries at every entry.
    pub fn open_or_degraded(dir: &Path) -> Self {
        match Self::open(dir) {
            Ok(journal) => journal,
            Err(e) => {
                let journal = Self::unopened(dir);
                if let Ok(mut health) = journal.health.lock() {
                    degrade(&mut health, &e);
                }
                journal
            }
        }
    }

    fn unopened(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            file: None,
            health: Arc::new(Mutex::new(JournalStatus {
                path: dir.join(FILE),
                ..Default::default()
            })),
        }
    }

    /// What `status` and the metrics show of the journal.
    pub fn health(&self) -> Arc<Mutex<JournalStatus>> {
        self.health.clone()
    }

    /// Appends one entry as one write of one line, then syncs it: after a
    /// crash the file ends with whole lines, or with one torn line that
    /// reading skips. A failed write is cut back, so that the next entry
    /// starts a whole line.
    pub fn append(&mut self, entry: &Entry) -> Result<(), JournalError> {
        let result = self.try_append(entry);
        self.note(&result);
        result
    }

    fn try_append(&mut self, entry: &Entry) -> Result<(), JournalError> {
        let path = self.dir.join(FILE);
        let mut line = serde_json::to_vec(entry)
            .map_err(|e| error_at(&path)(std::io::Error::other(e)))?;
        line.push(b'\n');
        if self.file.as_ref().is_some_and(|f| f.size >= MAX_BYTES) {
            // Due for rotation: opening again rotates it.
            self.file = None;
        }
        if self.file.is_none() {
            // Not open yet (or no longer): degraded until this works.
            self.file = Some(open_file(&self.dir)?);
        }
        let open = self.file.as_mut().expect("opened just above");
        let written = open
            .file
            .write_all(&line)
            .and_then(|()| open.file.sync_data());
        if let Err(source) = written {
            // ENOSPC part-way: drop the torn part (best effort).
            let _ = open.file.set_len(open.size);
            return Err(JournalError { path, source });
        }
        open.size += line.len() as u64;
        Ok(())
    }

    /// Counts an entry written or lost; logs only when the journal goes
    /// from working to not (with why) and back, never once per entry.
    fn note(&self, result: &Result<(), JournalError>) {
        let Ok(mut health) = self.health.lock() else {
            return;
        };
        match result {
            Ok(()) => {
                health.written += 1;
                if let Some(was) = health.degraded.take() {
                    tracing::info!(
                        "failover journal {}: writing again ({} entries lost while {was})",
                        health.path.display(),
                        health.lost
                    );
                }
            }
            Err(e) => {
                health.lost += 1;
                degrade(&mut health, e);
            }
        }
    }
}

/// Marks the journal not written, logging only a new reason.
fn degrade(health: &mut JournalStatus, error: &JournalError) {
    let reason = error.to_string();
    if health.degraded.as_deref() != Some(reason.as_str()) {
        tracing::error!(
            "failover journal: {reason}; running without it (failover is not affected; `status` shows it)"
        );
        health.degraded = Some(reason);
    }
}

/// Opens the journal file for appending: a directory it creates 0700, the
/// files 0600 (the history says who was master when, and why; only root
/// reads it), a journal found over its bound cut to its tail first.
fn open_file(dir: &Path) -> Result<OpenFile, JournalError> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    // An existing directory keeps its mode (it may be shared, as /tmp is;
    // the unit's StateDirectoryMode sets the packaged one): the files are
    // private whatever it is.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(error_at(dir))?;
    let path = dir.join(FILE);
    let rotated = dir.join(ROTATED);
    bound(&path, &rotated)?;
    private(&rotated)?;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .map_err(error_at(&path))?;
    private(&path)?;
    let size = file.metadata().map_err(error_at(&path))?.len();
    let mut open = OpenFile { file, size };
    // A crash mid-write left a torn last line: end it, so that it stays
    // one damaged line and the next entry starts whole.
    if open.size > 0 && !ends_with_newline(&path).map_err(error_at(&path))? {
        open.file.write_all(b"\n").map_err(error_at(&path))?;
        open.size += 1;
    }
    Ok(open)
}

/// Takes group and other access away from a journal file an older release
/// (or an operator) left readable.
fn private(path: &Path) -> Result<(), JournalError> {
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(error_at(path))
        }
        _ => Ok(()),
    }
}

/// Rotates the current file once it reaches [`MAX_BYTES`], and keeps the
/// documented bound on a journal found over it (another release's, or
/// copied in): a rotated file past it keeps only its newest lines.
fn bound(path: &Path, rotated: &Path) -> Result<(), JournalError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    if len(path) >= MAX_BYTES {
        std::fs::rename(path, rotated).map_err(error_at(path))?;
    }
    if len(rotated) > MAX_BYTES + LINE_SLACK {
        let kept = rotated.with_extension("1.tmp");
        let mut from = File::open(rotated).map_err(error_at(rotated))?;
        let start = tail_start(&mut from, MAX_BYTES).map_err(error_at(rotated))?;
        let mut to = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&kept)
            .map_err(error_at(&kept))?;
        let copied = std::io::copy(&mut from, &mut to)
            .and_then(|_| to.sync_all())
            .and_then(|()| std::fs::rename(&kept, rotated));
        if let Err(e) = copied {
            let _ = std::fs::remove_file(&kept);
            return Err(error_at(rotated)(e));
        }
        tracing::info!(
            "failover journal {}: over its bound, older lines before byte {start} dropped",
            rotated.display()
        );
    }
    Ok(())
}

/// Positions `file` at the first whole line of its last `limit` bytes (the
/// start if it is no longer); returns that offset.
fn tail_start(file: &mut File, limit: u64) -> std::io::Result<u64> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let len = file.metadata()?.len();
    if len <= limit {
        file.seek(SeekFrom::Start(0))?;
        return Ok(0);
    }
    let mut at = file.seek(SeekFrom::Start(len - limit))?;
    // Skip the partial line the cut fell in.
    let mut chunk = [0u8; 4096];
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            return Ok(at);
        }
        if let Some(newline) = chunk[..n].iter().position(|&b| b == b'\n') {
            at += newline as u64 + 1;
            file.seek(SeekFrom::Start(at))?;
            return Ok(at);
        }
        at += n as u64;
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
    /// Bytes left unread at the start of files over their bound (a journal
    /// written by something else): the oldest entries.
    pub skipped_bytes: u64,
}

/// Reads the journal in `dir`, rotated part first: of a file over its bound
/// only the whole lines at its end, so that memory stays
/// bounded whatever size the files have. A missing journal is an empty one.
pub fn read(dir: &Path) -> Result<JournalRead, JournalError> {
    let mut read = JournalRead::default();
    for name in [ROTATED, FILE] {
        let path = dir.join(name);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(JournalError { path, source }),
        };
        read.skipped_bytes +=
            tail_start(&mut file, MAX_BYTES + LINE_SLACK).map_err(error_at(&path))?;
        for line in BufReader::new(file).split(b'\n') {
            let line = line.map_err(error_at(&path))?;
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
                cause: None,
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
    fn a_journal_that_cannot_be_written_degrades_says_why_and_recovers() {
        let dir = dir("degraded");
        // A state "directory" that is a regular file.
        std::fs::write(&dir, b"not a directory").expect("file");
        let mut journal = Journal::open_or_degraded(&dir);
        let health = journal.health();
        let reason = health.lock().unwrap().degraded.clone();
        assert!(
            reason.as_deref().is_some_and(|r| r.contains(&dir.display().to_string())),
            "{reason:?}"
        );
        assert!(journal.append(&transition(1)).is_err());
        assert_eq!(health.lock().unwrap().lost, 1);
        // The directory can be made: the next entry is written.
        std::fs::remove_file(&dir).expect("rm");
        journal.append(&transition(2)).expect("append after the fix");
        let now = health.lock().unwrap().clone();
        assert_eq!((now.degraded, now.written, now.lost), (None, 1, 1));
        assert_eq!(read(&dir).expect("read").entries, vec![transition(2)]);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_journal_and_a_directory_it_creates_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = dir("private");
        let mut journal = Journal::open(&dir).expect("open");
        journal.append(&transition(1)).expect("append");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(FILE)), 0o600);
        // Files an older release left readable are made private.
        drop(journal);
        for name in [FILE, ROTATED] {
            std::fs::write(dir.join(name), b"").expect("write");
            std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o644))
                .expect("chmod");
        }
        Journal::open(&dir).expect("open again");
        assert_eq!((mode(&dir.join(FILE)), mode(&dir.join(ROTATED))), (0o600, 0o600));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_journal_found_over_its_bound_is_read_from_its_tail_and_cut_to_it() {
        let dir = dir("oversized");
        std::fs::create_dir_all(&dir).expect("dir");
        // 8 MiB, as another release (or a copy) might leave it.
        let mut text = Vec::new();
        let mut count = 0;
        while text.len() < 8 << 20 {
            text.extend(serde_json::to_vec(&transition(count)).expect("json"));
            text.push(b'\n');
            count += 1;
        }
        std::fs::write(dir.join(FILE), &text).expect("write");
        let line = text.len() as u64 / count;
        let bounded = (MAX_BYTES + LINE_SLACK) / line + 1;
        let found = read(&dir).expect("read");
        assert!(found.entries.len() as u64 <= bounded, "{} entries", found.entries.len());
        assert!(found.skipped_bytes > (8 << 20) - MAX_BYTES - LINE_SLACK - line);
        assert_eq!(found.damaged, 0, "the cut skips the line it falls in");
        assert_eq!(found.entries.last().map(Entry::at_unix_ms), Some(count - 1));
        // Opening it keeps the bound: the newest lines stay, in order.
        let mut journal = Journal::open(&dir).expect("open");
        journal.append(&transition(count)).expect("append");
        let total: u64 = [FILE, ROTATED]
            .iter()
            .map(|f| std::fs::metadata(dir.join(f)).map_or(0, |m| m.len()))
            .sum();
        assert!(total <= 2 * MAX_BYTES + line, "{total} bytes");
        let after = read(&dir).expect("read");
        assert_eq!(after.skipped_bytes, 0);
        assert_eq!(after.damaged, 0);
        let last: Vec<u64> = after.entries.iter().rev().take(2).map(Entry::at_unix_ms).collect();
        assert_eq!(last, vec![count, count - 1]);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_missing_journal_is_empty() {
        let read = read(&dir("missing")).expect("read");
        assert!(read.entries.is_empty() && read.damaged == 0);
    }
}
