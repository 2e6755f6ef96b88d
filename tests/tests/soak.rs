//! The short CI version of `cargo xtask soak cpu`, in a test binary of its
//! own: it saturates every core, so it must not share the machine with the
//! other timing-sensitive tests (cargo runs test binaries one at a time, the
//! tests inside one binary in parallel).

use std::time::Duration;

use wimark_ha::vrrp::Multiplier;

/// The packaged default.
const SATURATED_MULTIPLIER: Multiplier = Multiplier::Auto;

/// The short CI version of `cargo xtask soak cpu`: every core saturated by
/// stress-ng in both servers' namespaces, no false takeover (the capture on
/// the bridge sees no advert from the standby) at the packaged default
/// (1 ms x auto). A failure prints what tells the two causes apart: the
/// standby's silence and window, the active node's own longest gap between
/// turns (its stall) and both daemons' warnings (a lease run out).
/// See docs/reliability.md.
#[test]
fn saturated_cores_cause_no_false_failover() {
    let figures = wimark_ha_tests::soak::soak(
        wimark_ha_tests::failover_lab::Pair::WimarkHaFast,
        Duration::from_secs(20),
        true,
        SATURATED_MULTIPLIER,
    )
    .expect("soak");
    eprintln!("{}", wimark_ha_tests::soak::row(&figures));
    assert_eq!(
        figures.standby_adverts,
        0,
        "the standby took over: {figures:?}\n{}",
        figures.warnings.join("\n")
    );
    assert!(
        figures.active.0.rss_kib > 0 && figures.active.1 > 0.0,
        "measured: {figures:?}"
    );
}
