//! Log lines for journald. Under systemd stderr is a stream to the journal,
//! which stamps each line itself and reads a syslog priority from a `<N>`
//! prefix (sd-daemon(3)); without it every line arrives at "info", and
//! `journalctl -p warning` shows nothing whatever went wrong.
//!
//! Owns: telling whether stderr is the journal, and the line format there.
//! Must not: write anything itself (the daemon's logging thread writes, so
//! the realtime engine never waits on a full journal socket).

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::{
    fmt::{format::Writer, FmtContext, FormatEvent, FormatFields},
    registry::LookupSpan,
};

/// Whether stderr is the stream systemd connected to the journal:
/// `$JOURNAL_STREAM` ("device:inode") names it, and stderr's own device and
/// inode must match (a child whose stderr was redirected inherits the
/// variable, not the stream).
pub fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    stream
        .to_str()
        .is_some_and(|s| names_stream(s, stat.st_dev, stat.st_ino))
}

/// `value` ("device:inode", both decimal) names the stream of `device` and
/// `inode`.
fn names_stream(value: &str, device: u64, inode: u64) -> bool {
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    dev.parse() == Ok(device) && ino.parse() == Ok(inode)
}

/// The syslog priority of a tracing level (RFC 5424: 3 error, 4 warning,
/// 6 informational, 7 debug).
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// `<priority>LEVEL target: span{fields}: message fields` — no timestamp:
/// journald keeps its own, precise to the microsecond.
pub struct JournalFormat;

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        write!(
            writer,
            "<{}>{} {}: ",
            priority(*metadata.level()),
            metadata.level(),
            metadata.target()
        )?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                write!(writer, "{}", span.name())?;
                let extensions = span.extensions();
                if let Some(fields) =
                    extensions.get::<tracing_subscriber::fmt::FormattedFields<N>>()
                {
                    if !fields.is_empty() {
                        write!(writer, "{{{fields}}}")?;
                    }
                }
                write!(writer, ": ")?;
            }
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_line_carries_its_priority_and_no_timestamp() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(Level::DEBUG)
            .event_format(JournalFormat)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!("interface `eth1` does not exist");
            tracing::warn!(missing = 2, "APs did not come back");
            let span = tracing::info_span!("instance", name = "WIM1");
            let _entered = span.enter();
            tracing::info!("BACKUP -> MASTER");
            tracing::debug!("detail");
        });
        let text = String::from_utf8(captured.0.lock().expect("buffer").clone()).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("<3>ERROR "), "{text}");
        assert!(
            lines[0].ends_with("interface `eth1` does not exist"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("<4>WARN ") && lines[1].ends_with("missing=2"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("<6>INFO ")
                && lines[2].contains("instance{name=\"WIM1\"}: BACKUP -> MASTER"),
            "{text}"
        );
        // The priority first, no timestamp of our own: journald stamps
        // each line.
        assert!(lines[3].starts_with("<7>DEBUG "), "{text}");
    }

    #[test]
    fn journal_stream_names_device_and_inode() {
        assert!(names_stream("8:123456", 8, 123456));
        assert!(!names_stream("8:123456", 8, 123457), "another stream");
        assert!(!names_stream("8:123456", 9, 123456));
        assert!(!names_stream("garbage", 8, 123456));
        assert!(!names_stream("", 0, 0));
    }
}
