//! The fast rule's detection window, measured: how long a backup lets its
//! fast master fall silent before declaring it down.
//!
//! `multiplier = "auto"` learns the distribution of the gaps between the
//! master's fast adverts (kernel receive stamps) and keeps the window at the
//! smallest value whose estimated rate of gaps beyond it — a false takeover
//! each — stays under [`TARGET_FALSE_TAKEOVERS_PER_DAY`]. The idea is the
//! accrual failure detector's (Hayashibara et al., 2004): judge silence
//! against the arrivals seen, not against a constant. Ours estimates the
//! tail as extreme-value statistics do (peaks over a threshold, exponential
//! excesses), because the gaps of a VM are not normal: most are one
//! interval, a few are whole vCPU stalls.
//!
//! Bounds: never below [`FLOOR_INTERVALS`] intervals, never above the
//! ceiling (three Master_Adver_Intervals, below RFC 5798's
//! Master_Down_Interval, which stays the fallback); widened at once, narrowed
//! by at most [`NARROW_STEP`] per [`NARROW_PERIOD`] of adverts, and only on
//! adverts (a stall brings none, so it can never shrink the window); counts
//! fade with a [`HALF_LIFE`]. A false takeover (the "dead" master spoke
//! again) widens it past the gap it measured.
//!
//! Owns: the gap statistics and the window. Must not: read a clock or know
//! the machine's states (the machine feeds it kernel stamps).

use std::time::Duration;

use super::events::{Multiplier, Timestamp};

/// The false-takeover rate auto mode keeps the window under.
pub const TARGET_FALSE_TAKEOVERS_PER_DAY: f64 = 1.0;
/// The window is never shorter than this many fast intervals.
pub const FLOOR_INTERVALS: u32 = 3;
/// Gaps learned before auto mode arms the fast rule.
pub const LEARN_GAPS: u64 = 3_000;
/// Narrowing: at most this fraction of the window...
pub const NARROW_STEP: f64 = 0.1;
/// ...per this much time of adverts.
pub const NARROW_PERIOD: Duration = Duration::from_secs(60);
/// Learned counts halve in this time: an hour-old storm still counts half.
pub const HALF_LIFE: Duration = Duration::from_secs(3600);
/// How often the estimate is redone, in gaps.
const RECOMPUTE_EVERY: u64 = 500;
/// Histogram resolution: a quarter of the fast interval, at most this many
/// buckets (the last one holds everything longer).
const MAX_BUCKETS: usize = 4096;

/// Why the window has the length it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowBasis {
    /// `multiplier` fixed in the config.
    Fixed,
    /// Auto, still learning: the fast rule is not armed; the RFC timer judges.
    Learning,
    /// The estimate is below the floor (3 intervals).
    Floor,
    /// The tail estimate: gaps beyond it expected less often than the target.
    TailEstimate,
    /// The longest gap still remembered, plus one interval.
    WorstGap,
    /// A false takeover's gap, plus a margin.
    FalseTakeover,
    /// The estimate reached the ceiling (three advert intervals): this host
    /// is too noisy for the target below Master_Down_Interval, so the fast
    /// rule stands aside and the RFC timer judges, until it narrows.
    Ceiling,
}

impl WindowBasis {
    /// As in JSON and the metrics' `basis` label.
    pub fn name(self) -> &'static str {
        match self {
            WindowBasis::Fixed => "fixed",
            WindowBasis::Learning => "learning",
            WindowBasis::Floor => "floor",
            WindowBasis::TailEstimate => "tail_estimate",
            WindowBasis::WorstGap => "worst_gap",
            WindowBasis::FalseTakeover => "false_takeover",
            WindowBasis::Ceiling => "ceiling",
        }
    }
}

/// The window in force and what it rests on (status, metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowStatus {
    /// "auto" or the fixed multiplier.
    pub multiplier: String,
    #[serde(with = "crate::clock::micros", rename = "window_us", default)]
    pub window: Option<Duration>,
    pub basis: Option<WindowBasis>,
    /// Whether the fast rule may fire (warm-up and learning done).
    pub armed: bool,
    /// Gaps learned (faded counts, rounded).
    pub gaps: u64,
    #[serde(with = "crate::clock::micros", rename = "gap_p50_us", default)]
    pub p50: Option<Duration>,
    #[serde(with = "crate::clock::micros", rename = "gap_p99_us", default)]
    pub p99: Option<Duration>,
    #[serde(with = "crate::clock::micros", rename = "gap_p999_us", default)]
    pub p999: Option<Duration>,
    #[serde(with = "crate::clock::micros", rename = "gap_max_us", default)]
    pub max: Option<Duration>,
    pub false_takeovers: u64,
}

/// The gap statistics of one backup instance and the window they give.
#[derive(Clone, Debug)]
pub struct GapLearner {
    interval: Duration,
    multiplier: Multiplier,
    ceiling: Duration,
    bucket: Duration,
    /// Faded counts per bucket of `bucket` width.
    counts: Vec<f64>,
    /// Faded sum of the gaps, in seconds: the time the counts cover.
    observed_secs: f64,
    /// Gaps ever seen (not faded): the learning phase counts these.
    seen: u64,
    since_recompute: u64,
    last_fade: Option<Timestamp>,
    last_narrowed: Option<Timestamp>,
    window: Duration,
    basis: WindowBasis,
    false_takeovers: u64,
}

impl GapLearner {
    /// `ceiling`: the longest window worth having (below Master_Down_Interval).
    pub fn new(interval: Duration, multiplier: Multiplier, ceiling: Duration) -> Self {
        let floor = FLOOR_INTERVALS * interval;
        let ceiling = ceiling.max(floor);
        let bucket = (interval / 4).max(ceiling / MAX_BUCKETS as u32).max(Duration::from_micros(1));
        let buckets = (ceiling.as_nanos() / bucket.as_nanos()) as usize + 2;
        let (window, basis) = match multiplier {
            Multiplier::Fixed(n) => (n * interval, WindowBasis::Fixed),
            Multiplier::Auto => (floor, WindowBasis::Learning),
        };
        Self {
            interval,
            multiplier,
            ceiling,
            bucket,
            counts: vec![0.0; buckets.min(MAX_BUCKETS + 2)],
            observed_secs: 0.0,
            seen: 0,
            since_recompute: 0,
            last_fade: None,
            last_narrowed: None,
            window,
            basis,
            false_takeovers: 0,
        }
    }

    /// The silence after the last advert that declares the master down.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Whether the fast rule may fire (auto: once enough gaps are learned,
    /// and not at the ceiling — there the target cannot be met below
    /// Master_Down_Interval, and a fast rule firing at the ceiling would
    /// only take over on silences the RFC timer rightly waits out).
    pub fn armed(&self) -> bool {
        match self.multiplier {
            Multiplier::Fixed(_) => true,
            Multiplier::Auto => self.seen >= LEARN_GAPS && self.basis != WindowBasis::Ceiling,
        }
    }

    /// One gap between two consecutive fast adverts, the second stamped `at`.
    pub fn observe(&mut self, gap: Duration, at: Timestamp) {
        self.fade(at);
        self.add(gap, 1.0);
        self.seen += 1;
        self.since_recompute += 1;
        if self.multiplier == Multiplier::Auto
            && self.seen >= LEARN_GAPS
            && (self.since_recompute >= RECOMPUTE_EVERY || gap >= self.window)
        {
            self.since_recompute = 0;
            self.adapt(at);
        }
    }

    /// A fast takeover turned out false: the master was silent for `gap`
    /// and spoke again. Auto mode widens past it at once.
    pub fn observe_false_takeover(&mut self, gap: Duration, at: Timestamp) {
        self.false_takeovers += 1;
        self.fade(at);
        self.add(gap, 1.0);
        if self.multiplier == Multiplier::Auto {
            let wider = (gap + gap / 4 + self.interval).min(self.ceiling);
            if wider > self.window {
                self.window = wider;
                self.basis = if wider == self.ceiling {
                    WindowBasis::Ceiling
                } else {
                    WindowBasis::FalseTakeover
                };
                self.last_narrowed = Some(at);
            }
        }
    }

    pub fn status(&self, armed: bool) -> WindowStatus {
        let total: f64 = self.counts.iter().sum();
        let quantile = |q: f64| (total >= 1.0).then(|| self.quantile(q, total));
        WindowStatus {
            multiplier: match self.multiplier {
                Multiplier::Fixed(n) => n.to_string(),
                Multiplier::Auto => "auto".to_string(),
            },
            window: Some(self.window),
            basis: Some(if self.multiplier == Multiplier::Auto && self.seen < LEARN_GAPS {
                WindowBasis::Learning
            } else {
                self.basis
            }),
            armed,
            gaps: total.round() as u64,
            p50: quantile(0.5),
            p99: quantile(0.99),
            p999: quantile(0.999),
            max: self.worst_gap(0.05),
            false_takeovers: self.false_takeovers,
        }
    }

    // ===== the estimate =====

    fn add(&mut self, gap: Duration, weight: f64) {
        let index = ((gap.as_nanos() / self.bucket.as_nanos()) as usize).min(self.counts.len() - 1);
        self.counts[index] += weight;
        self.observed_secs += gap.as_secs_f64() * weight;
    }

    /// Counts fade on the adverts' own clock, a minute at a time.
    fn fade(&mut self, at: Timestamp) {
        let Some(last) = self.last_fade else {
            self.last_fade = Some(at);
            return;
        };
        let elapsed = at.saturating_since(last);
        if elapsed < Duration::from_secs(60) {
            return;
        }
        let factor = 0.5f64.powf(elapsed.as_secs_f64() / HALF_LIFE.as_secs_f64());
        self.counts.iter_mut().for_each(|c| *c *= factor);
        self.observed_secs *= factor;
        self.last_fade = Some(at);
    }

    fn upper_edge(&self, index: usize) -> Duration {
        self.bucket * (index as u32 + 1)
    }

    fn quantile(&self, q: f64, total: f64) -> Duration {
        let mut below = 0.0;
        for (index, count) in self.counts.iter().enumerate() {
            below += count;
            if below >= q * total {
                return self.upper_edge(index);
            }
        }
        self.upper_edge(self.counts.len() - 1)
    }

    /// The longest gap still remembered with a count of at least
    /// `min_count` (a single one falls below one half after a half-life).
    fn worst_gap(&self, min_count: f64) -> Option<Duration> {
        self.counts
            .iter()
            .rposition(|c| *c >= min_count)
            .map(|index| self.upper_edge(index))
    }

    /// The smallest window whose estimated rate of longer gaps stays under
    /// the target: above the threshold `u` (the 99th percentile, at least two
    /// intervals) the excesses are taken as exponential with their measured
    /// mean `m`, so gaps beyond `w` come at `rate(u) * exp(-(w - u) / m)`.
    fn estimate(&self) -> (Duration, WindowBasis) {
        let total: f64 = self.counts.iter().sum();
        let floor = FLOOR_INTERVALS * self.interval;
        if total < 1.0 || self.observed_secs <= 0.0 {
            return (floor, WindowBasis::Floor);
        }
        let threshold = self.quantile(0.99, total).max(2 * self.interval);
        let first_above = (threshold.as_nanos() / self.bucket.as_nanos()) as usize;
        let (mut exceeding, mut excess) = (0.0, 0.0);
        for (index, count) in self.counts.iter().enumerate().skip(first_above) {
            let middle = self.bucket.as_secs_f64() * (index as f64 + 0.5);
            exceeding += count;
            excess += count * (middle - threshold.as_secs_f64()).max(0.0);
        }
        // With (almost) nothing above the threshold yet, assume one such gap
        // in the time observed, its excess the histogram's resolution: no
        // data is not evidence of no tail, and the longer the quiet, the
        // rarer that one gap.
        let mean_excess = if exceeding >= 1.0 {
            (excess / exceeding).max(self.bucket.as_secs_f64())
        } else {
            self.bucket.as_secs_f64()
        };
        let rate_above = exceeding.max(1.0) / self.observed_secs;
        let target_rate = TARGET_FALSE_TAKEOVERS_PER_DAY / 86_400.0;
        let tail = threshold.as_secs_f64() + mean_excess * (rate_above / target_rate).ln().max(0.0);
        let tail = Duration::from_secs_f64(tail.min(self.ceiling.as_secs_f64()));
        // Every gap of the last hour or so (counts above one half) would
        // have been survived.
        let worst = self
            .worst_gap(0.5)
            .map(|w| w + self.interval)
            .unwrap_or_default();
        let (estimate, basis) = if worst > tail {
            (worst, WindowBasis::WorstGap)
        } else {
            (tail, WindowBasis::TailEstimate)
        };
        if estimate >= self.ceiling {
            (self.ceiling, WindowBasis::Ceiling)
        } else if estimate <= floor {
            (floor, WindowBasis::Floor)
        } else {
            (estimate, basis)
        }
    }

    /// Widen at once; narrow by at most NARROW_STEP per NARROW_PERIOD.
    fn adapt(&mut self, at: Timestamp) {
        let (estimate, basis) = self.estimate();
        let learning = self.basis == WindowBasis::Learning;
        if estimate >= self.window || learning {
            if estimate != self.window || learning {
                self.last_narrowed = Some(at);
            }
            self.window = estimate;
            self.basis = basis;
            return;
        }
        let since = self.last_narrowed.map(|t| at.saturating_since(t));
        if since.is_some_and(|s| s < NARROW_PERIOD) {
            return;
        }
        // Narrowing toward the estimate: the window rests on it (a step
        // above it is on the safe side), and leaves the ceiling with it.
        let step = self.window.mul_f64(1.0 - NARROW_STEP);
        self.window = estimate.max(step);
        self.basis = basis;
        self.last_narrowed = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: f64) -> Duration {
        Duration::from_secs_f64(n / 1000.0)
    }

    /// Feeds `gaps` repeatedly from `start`, returns the clock after.
    fn feed(learner: &mut GapLearner, mut at: Timestamp, gaps: &[f64], times: usize) -> Timestamp {
        for _ in 0..times {
            for gap in gaps {
                at = at + ms(*gap);
                learner.observe(ms(*gap), at);
            }
        }
        at
    }

    fn auto() -> GapLearner {
        GapLearner::new(ms(1.0), Multiplier::Auto, ms(30.0))
    }

    #[test]
    fn auto_is_unarmed_until_it_has_learned() {
        let mut learner = auto();
        let t = feed(&mut learner, Timestamp(0), &[1.0], LEARN_GAPS as usize - 1);
        assert!(!learner.armed());
        assert_eq!(learner.status(false).basis, Some(WindowBasis::Learning));
        feed(&mut learner, t, &[1.0], 1);
        assert!(learner.armed());
    }

    #[test]
    fn a_punctual_master_narrows_to_the_floor_as_the_quiet_lasts() {
        let mut learner = auto();
        let t = feed(&mut learner, Timestamp(0), &[1.0, 0.98, 1.02], 1000);
        let learned = learner.window();
        assert!(learned > ms(3.0) && learned < ms(5.0), "{learned:?}");
        // Ten minutes without a late advert: evidence of a light tail, the
        // window a quarter millisecond above the floor.
        feed(&mut learner, t, &[1.0], 600_000);
        let quiet = learner.window();
        assert!(quiet < ms(3.5) && quiet < learned, "{quiet:?}");
        assert_eq!(learner.status(true).basis, Some(WindowBasis::TailEstimate));
    }

    #[test]
    fn stalls_widen_past_the_worst_gap_and_the_tail() {
        let mut learner = auto();
        // A 4 ms stall every 1 000 adverts, a few 2 ms ones between.
        let mut gaps = vec![1.0; 1000];
        gaps[100] = 2.0;
        gaps[500] = 2.2;
        gaps[999] = 4.0;
        feed(&mut learner, Timestamp(0), &gaps, 10);
        let window = learner.window();
        assert!(window > ms(5.0), "past the worst gap plus an interval: {window:?}");
        assert!(window < ms(30.0), "{window:?}");
    }

    #[test]
    fn narrowing_is_slow_and_needs_adverts() {
        let mut learner = auto();
        let mut gaps = vec![1.0; 3000];
        gaps[2999] = 12.0;
        let t = feed(&mut learner, Timestamp(0), &gaps, 1);
        let wide = learner.window();
        assert!(wide >= ms(13.0), "{wide:?}");
        // Two minutes of punctual adverts: at most two 10 % steps.
        let t = feed(&mut learner, t, &[1.0], 120_000);
        let narrower = learner.window();
        assert!(narrower < wide, "{narrower:?}");
        assert!(narrower >= wide.mul_f64(0.81) - ms(0.01), "{narrower:?} vs {wide:?}");
        // A stall brings no advert: nothing changes however long it lasts;
        // the gap it leaves widens.
        learner.observe(ms(20.0), t + ms(20.0));
        assert!(learner.window() >= ms(21.0));
    }

    #[test]
    fn a_false_takeover_widens_past_its_gap() {
        let mut learner = auto();
        let t = feed(&mut learner, Timestamp(0), &[1.0], 5000);
        assert!(learner.window() < ms(5.0));
        learner.observe_false_takeover(ms(6.0), t);
        assert!(learner.window() > ms(7.0));
        assert_eq!(learner.status(true).false_takeovers, 1);
        assert_eq!(learner.status(true).basis, Some(WindowBasis::FalseTakeover));
    }

    #[test]
    fn fixed_keeps_its_multiplier_and_still_reports_the_gaps() {
        let mut learner = GapLearner::new(ms(1.0), Multiplier::Fixed(10), ms(30.0));
        assert!(learner.armed());
        feed(&mut learner, Timestamp(0), &[1.0, 1.0, 25.0], 10);
        assert_eq!(learner.window(), ms(10.0));
        let status = learner.status(true);
        assert_eq!(status.basis, Some(WindowBasis::Fixed));
        assert_eq!(status.max, Some(ms(25.25)));
        assert_eq!(status.p50, Some(ms(1.25)));
    }

    #[test]
    fn at_the_ceiling_the_fast_rule_stands_aside() {
        let mut learner = auto();
        feed(&mut learner, Timestamp(0), &[1.0, 1.0, 1.0, 50.0], 1000);
        assert_eq!(learner.window(), ms(30.0));
        assert_eq!(learner.status(false).basis, Some(WindowBasis::Ceiling));
        assert!(!learner.armed(), "the RFC timer judges such a host");
    }
}
