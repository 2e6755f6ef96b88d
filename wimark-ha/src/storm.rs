//! Rate-limited log lines: an error that repeats (accept failing with
//! EMFILE, a connection cap reached, spoofed adverts) becomes one line at
//! once and then at most one summary per period, not a line per
//! occurrence — journald keeps what matters, and the storm costs nothing.
//!
//! Owns: counting occurrences and deciding when a line is due. Must not:
//! decide what is logged, or at what level.

use std::time::{Duration, Instant};

/// One kind of repeated event.
#[derive(Debug)]
pub struct Storm {
    period: Duration,
    last_line: Option<Instant>,
    unlogged: u64,
}

impl Storm {
    pub const fn new(period: Duration) -> Self {
        Self {
            period,
            last_line: None,
            unlogged: 0,
        }
    }

    /// Call at each occurrence. `Some(n)` when a line is due now, `n` the
    /// occurrences since the last line that were not logged.
    pub fn occurred(&mut self, now: Instant) -> Option<u64> {
        match self.last_line {
            Some(last) if now.saturating_duration_since(last) < self.period => {
                self.unlogged += 1;
                None
            }
            _ => {
                self.last_line = Some(now);
                Some(std::mem::take(&mut self.unlogged))
            }
        }
    }
}

/// " (N more since the last line)" when some were not logged.
pub fn more(unlogged: u64) -> String {
    if unlogged == 0 {
        String::new()
    } else {
        format!(" ({unlogged} more since the last line)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_is_one_line_then_one_summary_per_period() {
        let start = Instant::now();
        let mut storm = Storm::new(Duration::from_secs(60));
        let lines: Vec<(u64, Option<u64>)> = (0..5_000u64)
            // 5 000 occurrences over 150 s, one every 30 ms.
            .map(|i| (i, storm.occurred(start + Duration::from_millis(30 * i))))
            .filter(|(_, line)| line.is_some())
            .collect();
        assert_eq!(
            lines,
            vec![(0, Some(0)), (2_000, Some(1_999)), (4_000, Some(1_999))],
        );
        assert_eq!(more(0), "");
        assert_eq!(more(3), " (3 more since the last line)");
    }
}
