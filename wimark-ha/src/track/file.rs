//! A file tracker's watcher: keepalived's `track_file`, told by inotify.
//!
//! Owns: reading the number in the file whenever the kernel says its
//! directory changed (written and closed, moved in, created, removed), no
//! polling. Must not: weigh the number (the tracker does).

use std::{
    os::fd::{AsFd as _, AsRawFd, RawFd},
    path::{Path, PathBuf},
};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::Observation;

/// The number `path` holds, as keepalived reads a track file: the first
/// word, an integer; a missing file or anything else is 0 (and says so).
pub fn read_value(path: &Path) -> Observation {
    match std::fs::read(path) {
        Err(e) => Observation::Value {
            value: 0,
            detail: format!("unreadable ({e}): 0"),
        },
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).into_owned();
            match text.split_whitespace().next().map(str::parse::<i64>) {
                Some(Ok(value)) => Observation::Value {
                    value,
                    detail: format!("value {value}"),
                },
                _ => Observation::Value {
                    value: 0,
                    detail: "not a number: 0".to_string(),
                },
            }
        }
    }
}

/// tokio's readiness wants the raw descriptor; nix's Inotify lends a
/// borrowed one.
struct Watch(Inotify);

impl AsRawFd for Watch {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Watches `path` forever: one report at the start, then one per change.
pub async fn watch(instance: String, name: String, path: PathBuf, report: impl Fn(Observation)) {
    let directory = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let file_name = path.file_name().map(|n| n.to_os_string());
    let watcher =
        Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).and_then(|inotify| {
            inotify.add_watch(
                &directory,
                AddWatchFlags::IN_CLOSE_WRITE
                    | AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_MOVED_FROM
                    | AddWatchFlags::IN_CREATE
                    | AddWatchFlags::IN_DELETE
                    | AddWatchFlags::IN_DELETE_SELF,
            )?;
            Ok(inotify)
        });
    let inotify = match watcher
        .map_err(std::io::Error::from)
        .and_then(|inotify| crate::monitor::register_readable(Watch(inotify)))
    {
        Ok(fd) => fd,
        Err(e) => {
            // Read once, and say the value will not follow the file.
            tracing::error!(%instance, tracker = %name, directory = %directory.display(), "track file cannot be watched ({e}): its value is read once and not followed");
            report(read_value(&path));
            return;
        }
    };
    let mut last = None;
    let look = |last: &mut Option<Observation>| {
        let observation = read_value(&path);
        if last.as_ref() != Some(&observation) {
            tracing::info!(%instance, tracker = %name, file = %path.display(), detail = ?observation, "track file read");
            *last = Some(observation.clone());
            report(observation);
        }
    };
    look(&mut last);
    loop {
        let Ok(mut ready) = inotify.readable().await else {
            return;
        };
        let events = match ready.get_inner().0.read_events() {
            Ok(events) => events,
            Err(nix::errno::Errno::EAGAIN) => {
                ready.clear_ready();
                continue;
            }
            Err(e) => {
                tracing::error!(%instance, tracker = %name, "track file watch failed ({e}): its value is no longer followed");
                return;
            }
        };
        // Ours, or a queue overflow (IN_Q_OVERFLOW names no file): read.
        if events
            .iter()
            .any(|e| e.name.is_none() || e.name.as_ref() == file_name.as_ref())
        {
            look(&mut last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("wimark-ha-track-file-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn a_track_file_reads_as_keepalived_reads_it() {
        let dir = scratch("read");
        let path = dir.join("prio");
        assert!(matches!(
            read_value(&path),
            Observation::Value { value: 0, .. }
        ));
        std::fs::write(&path, "-7\n").expect("write");
        assert_eq!(
            read_value(&path),
            Observation::Value {
                value: -7,
                detail: "value -7".to_string()
            }
        );
        std::fs::write(&path, "high").expect("write");
        assert_eq!(
            read_value(&path),
            Observation::Value {
                value: 0,
                detail: "not a number: 0".to_string()
            }
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_change_to_the_file_is_reported_without_polling() {
        let dir = scratch("watch");
        let path = dir.join("prio");
        std::fs::write(&path, "1").expect("write");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(watch(
            "WIM1".into(),
            "prio".into(),
            path.clone(),
            move |o| {
                let _ = tx.send(o);
            },
        ));
        async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Observation>) -> Observation {
            tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
                .await
                .expect("reported")
                .expect("open")
        }
        assert!(matches!(
            next(&mut rx).await,
            Observation::Value { value: 1, .. }
        ));
        // Replaced by rename, as careful writers do.
        let staged = dir.join("prio.new");
        std::fs::write(&staged, "5").expect("write");
        std::fs::rename(&staged, &path).expect("rename");
        assert!(matches!(
            next(&mut rx).await,
            Observation::Value { value: 5, .. }
        ));
        std::fs::remove_file(&path).expect("remove");
        assert!(matches!(
            next(&mut rx).await,
            Observation::Value { value: 0, .. }
        ));
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
