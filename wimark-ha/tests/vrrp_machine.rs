//! The VRRP state machine, driven by recorded event sequences with a
//! simulated clock: no sockets, no sleeps. Each test names the RFC rule it
//! checks.

use std::{net::IpAddr, time::Duration};

use wimark_ha::vrrp::{
    Action, Advert, Auth, FastDetect, Heartbeat, Ignored, Instance, Multiplier, Params, Reason,
    State, Timestamp, Version, FAST_RULE_WARMUP, VIP_FAULT_HOLD,
};

const LOCAL: &str = "10.77.0.2";
const PEER_LOW: &str = "10.77.0.1";
const PEER_HIGH: &str = "10.77.0.3";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn at_ms(n: f64) -> Timestamp {
    Timestamp((n * 1e6) as u64)
}

fn v3(priority: u8, interval_ms: u64) -> Params {
    Params {
        version: Version::V3,
        vrid: 67,
        priority,
        advert_interval: ms(interval_ms),
        auth: Auth::None,
        virtual_ips: vec![ip("10.10.10.3")],
        preempt: true,
        primary_address: ip(LOCAL),
        fast_detect: None,
        sole_peer: false,
    }
}

fn v2_vendor() -> Params {
    Params {
        version: Version::V2,
        auth: Auth::password("wimark12"),
        advert_interval: Duration::from_secs(1),
        ..v3(200, 1000)
    }
}

fn advert(params: &Params, priority: u8, interval: Duration) -> Advert {
    Advert {
        version: params.version,
        vrid: params.vrid,
        priority,
        interval,
        auth: params.auth,
        addresses: params.virtual_ips.clone(),
    }
}

/// The advert every test router (VRID 67, 10 ms, the one VIP) sends with
/// `priority`: the machine hands out the complete advert.
fn sends(priority: u8) -> Action {
    let params = v3(priority, 10);
    Action::SendAdvert(advert(&params, priority, params.advert_interval))
}

fn drain(instance: &mut Instance) -> Vec<Action> {
    std::iter::from_fn(|| instance.poll_action()).collect()
}

fn transitions(actions: &[Action]) -> Vec<(State, State, Reason)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Transition {
                from, to, reason, ..
            } => Some((*from, *to, *reason)),
            _ => None,
        })
        .collect()
}

/// Runs timeouts up to `until`, as the runtime would: wake at each deadline.
fn run_until(instance: &mut Instance, until: Timestamp) -> Vec<Action> {
    let mut actions = Vec::new();
    while let Some(deadline) = instance.poll_timeout() {
        if deadline > until {
            break;
        }
        instance.handle_timeout(deadline);
        actions.extend(drain(instance));
    }
    actions
}

// ===== RFC 5798 §6.1 timer arithmetic =====

#[test]
fn skew_and_master_down_interval_follow_rfc_5798_and_3768() {
    let v3 = Instance::new(v3(200, 10));
    // ((256 - 200) * 10 ms) / 256 = 2.1875 ms; 3 * 10 ms + skew.
    assert_eq!(v3.skew_time(), Duration::from_nanos(2_187_500));
    assert_eq!(v3.master_down_interval(), Duration::from_nanos(32_187_500));
    let v2 = Instance::new(v2_vendor());
    // (256 - 200) / 256 s = 0.21875 s; 3 * 1 s + skew.
    assert_eq!(v2.skew_time(), Duration::from_micros(218_750));
    assert_eq!(v2.master_down_interval(), Duration::from_micros(3_218_750));
}

// ===== RFC 5798 §6.4.1 Initialize =====

#[test]
fn startup_goes_to_backup_with_master_down_timer() {
    let mut instance = Instance::new(v3(200, 10));
    instance.start(at_ms(0.0));
    assert_eq!(instance.state(), State::Backup);
    assert_eq!(
        transitions(&drain(&mut instance)),
        vec![(State::Initialize, State::Backup, Reason::Startup)]
    );
    assert_eq!(instance.poll_timeout(), Some(Timestamp(32_187_500)));
}

#[test]
fn address_owner_goes_straight_to_master() {
    let mut instance = Instance::new(v3(255, 10));
    instance.start(at_ms(0.0));
    let actions = drain(&mut instance);
    assert_eq!(
        actions,
        vec![
            sends(255),
            Action::AddVirtualIps,
            Action::AnnounceVirtualIps,
            Action::Transition {
                from: State::Initialize,
                to: State::Master,
                reason: Reason::AddressOwner,
                silence: None
            },
        ]
    );
    assert_eq!(instance.poll_timeout(), Some(at_ms(10.0)));
}

// ===== RFC 5798 §6.4.2 Backup =====

#[test]
fn master_down_timer_fires_into_master_advert_then_vip_and_garp() {
    let mut instance = Instance::new(v3(200, 10));
    instance.start(at_ms(0.0));
    drain(&mut instance);
    assert!(
        run_until(&mut instance, at_ms(32.0)).is_empty(),
        "nothing before Master_Down_Interval"
    );
    let actions = run_until(&mut instance, at_ms(33.0));
    // RFC 5798 §6.4.2: "Send an ADVERTISEMENT", then gratuitous ARP: a
    // lower-priority backup firing on the same silence hears us first.
    assert_eq!(
        actions[..3],
        [
            sends(200),
            Action::AddVirtualIps,
            Action::AnnounceVirtualIps,
        ],
        "the advert, then VIP and gratuitous ARP, before anything else"
    );
    assert_eq!(
        transitions(&actions),
        vec![(State::Backup, State::Master, Reason::MasterDown)]
    );
}

#[test]
fn adverts_from_the_master_keep_the_backup_down_counting_from_kernel_time() {
    let params = v3(100, 10);
    let mut instance = Instance::new(params.clone());
    instance.start(at_ms(0.0));
    drain(&mut instance);
    let heard = advert(&params, 200, ms(10));
    for n in 1..=100u64 {
        let sent = at_ms(n as f64 * 10.0);
        // The runtime may process it late; the deadline counts from the
        // kernel's receive time.
        instance
            .handle_advert(sent + ms(3), ip(PEER_HIGH), &heard, sent)
            .expect("accepted");
        assert!(run_until(&mut instance, sent + ms(9)).is_empty());
    }
    assert_eq!(instance.state(), State::Backup);
    assert_eq!(instance.master(), Some(ip(PEER_HIGH)));
    // Last advert at 1000 ms; Master_Down_Interval with priority 100 is
    // 30 ms + 156/256 * 10 ms = 36.09375 ms.
    assert_eq!(instance.poll_timeout(), Some(Timestamp(1_036_093_750)));
    let actions = run_until(&mut instance, at_ms(1037.0));
    let silence = actions.iter().find_map(|a| match a {
        Action::Transition { silence, .. } => *silence,
        _ => None,
    });
    assert_eq!(silence, Some(Duration::from_nanos(36_093_750)));
}

#[test]
fn priority_zero_makes_the_backup_take_over_after_skew_time_only() {
    let params = v3(200, 10);
    let mut instance = Instance::new(params.clone());
    instance.start(at_ms(0.0));
    drain(&mut instance);
    instance
        .handle_advert(
            at_ms(5.0),
            ip(PEER_HIGH),
            &advert(&params, 250, ms(10)),
            at_ms(5.0),
        )
        .expect("ok");
    instance
        .handle_advert(
            at_ms(10.0),
            ip(PEER_HIGH),
            &advert(&params, 0, ms(10)),
            at_ms(10.0),
        )
        .expect("ok");
    // Skew_Time = 56/256 * 10 ms = 2.1875 ms after the resignation was processed.
    assert_eq!(instance.poll_timeout(), Some(Timestamp(12_187_500)));
    let actions = run_until(&mut instance, at_ms(12.2));
    assert_eq!(
        transitions(&actions),
        vec![(State::Backup, State::Master, Reason::PeerResigned)]
    );
}

#[test]
fn preempting_backup_discards_lower_priority_and_takes_over() {
    let params = v3(200, 10);
    let mut instance = Instance::new(params.clone());
    instance.start(at_ms(0.0));
    drain(&mut instance);
    for n in 1..=3 {
        let t = at_ms(n as f64 * 10.0);
        assert_eq!(
            instance.handle_advert(t, ip(PEER_HIGH), &advert(&params, 100, ms(10)), t),
            Err(Ignored::LowerPriority)
        );
    }
    // The master-down timer from startup kept running.
    let actions = run_until(&mut instance, at_ms(33.0));
    assert_eq!(
        transitions(&actions),
        vec![(State::Backup, State::Master, Reason::MasterDown)]
    );
}

#[test]
fn nopreempt_backup_accepts_a_lower_priority_master() {
    let params = Params {
        preempt: false,
        ..v3(200, 10)
    };
    let mut instance = Instance::new(params.clone());
    instance.start(at_ms(0.0));
    drain(&mut instance);
    for n in 1..=20 {
        let t = at_ms(n as f64 * 10.0);
        instance
            .handle_advert(t, ip(PEER_LOW), &advert(&params, 100, ms(10)), t)
            .expect("accepted");
        run_until(&mut instance, t + ms(9));
    }
    assert_eq!(instance.state(), State::Backup);
}

#[test]
fn v3_backup_learns_the_masters_interval() {
    let params = v3(200, 10);
    let mut instance = Instance::new(params.clone());
    instance.start(at_ms(0.0));
    drain(&mut instance);
    instance
        .handle_advert(
            at_ms(1.0),
            ip(PEER_HIGH),
            &advert(&params, 250, ms(100)),
            at_ms(1.0),
        )
        .expect("ok");
    assert_eq!(instance.master_adver_interval(), ms(100));
    // 3 * 100 ms + 56/256 * 100 ms = 321.875 ms after the advert.
    assert_eq!(
        instance.poll_timeout(),
        Some(Timestamp(1_000_000 + 321_875_000))
    );
}

// ===== RFC 5798 §6.4.3 Master =====

/// An instance that won the election by its master-down timer (no peer).
fn master(params: Params) -> Instance {
    let mut instance = Instance::new(params);
    instance.start(at_ms(0.0));
    run_until(&mut instance, at_ms(100.0));
    drain(&mut instance);
    assert_eq!(instance.state(), State::Master);
    instance
}

#[test]
fn master_sends_on_absolute_deadlines() {
    let mut instance = master(v3(200, 10));
    let first = instance.poll_timeout().expect("adver timer");
    // Woken 4 ms late: the next deadline stays on the original cadence.
    instance.handle_timeout(first + ms(4));
    assert_eq!(drain(&mut instance), vec![sends(200)]);
    assert_eq!(instance.poll_timeout(), Some(first + ms(10)));
}

#[test]
fn master_yields_to_higher_priority() {
    let params = v3(200, 10);
    let mut instance = master(params.clone());
    let now = instance.poll_timeout().expect("timer");
    instance
        .handle_advert(now, ip(PEER_LOW), &advert(&params, 201, ms(10)), now)
        .expect("ok");
    let actions = drain(&mut instance);
    assert_eq!(actions[0], Action::RemoveVirtualIps);
    assert_eq!(
        transitions(&actions),
        vec![(State::Master, State::Backup, Reason::PreemptedByPeer)]
    );
}

#[test]
fn equal_priority_is_decided_by_the_higher_address() {
    let params = v3(200, 10);
    let mut instance = master(params.clone());
    let now = instance.poll_timeout().expect("timer");
    // Lower address, same priority: discarded, we stay master.
    assert_eq!(
        instance.handle_advert(now, ip(PEER_LOW), &advert(&params, 200, ms(10)), now),
        Err(Ignored::LowerPriority)
    );
    assert_eq!(instance.state(), State::Master);
    // Higher address, same priority: we yield.
    instance
        .handle_advert(now, ip(PEER_HIGH), &advert(&params, 200, ms(10)), now)
        .expect("ok");
    assert_eq!(instance.state(), State::Backup);
}

#[test]
fn master_answers_a_resignation_with_an_advert_at_once() {
    let params = v3(200, 10);
    let mut instance = master(params.clone());
    let now = instance.poll_timeout().expect("timer");
    instance
        .handle_advert(now, ip(PEER_HIGH), &advert(&params, 0, ms(10)), now)
        .expect("ok");
    assert_eq!(drain(&mut instance), vec![sends(200)]);
    assert_eq!(instance.state(), State::Master);
}

#[test]
fn shutdown_of_the_master_resigns_and_keeps_the_vips_until_the_new_master_speaks() {
    let params = v3(200, 10);
    let mut instance = master(params.clone());
    instance.shutdown(at_ms(500.0));
    let actions = drain(&mut instance);
    assert_eq!(actions[0], sends(0));
    assert!(
        !actions.contains(&Action::RemoveVirtualIps),
        "VIPs kept for the new master's first advert: {actions:?}"
    );
    assert_eq!(
        transitions(&actions),
        vec![(State::Master, State::Initialize, Reason::Shutdown)]
    );
    // The hold is a deadline of the machine, SHUTDOWN_VIP_HOLD away.
    assert_eq!(
        instance.poll_timeout(),
        Some(at_ms(500.0) + wimark_ha::vrrp::SHUTDOWN_VIP_HOLD)
    );
    // Another resignation is not a new master: the VIPs stay.
    instance
        .handle_advert(
            at_ms(500.3),
            ip(PEER_LOW),
            &advert(&params, 0, ms(10)),
            at_ms(500.3),
        )
        .expect("heard");
    assert!(drain(&mut instance).is_empty());
    // The new master's first advert releases them at once; nothing is left
    // to time, so the runtime may stop.
    instance
        .handle_advert(
            at_ms(500.6),
            ip(PEER_LOW),
            &advert(&params, 100, ms(10)),
            at_ms(500.6),
        )
        .expect("heard");
    assert_eq!(drain(&mut instance), vec![Action::RemoveVirtualIps]);
    assert_eq!(instance.poll_timeout(), None);
    assert!(run_until(&mut instance, at_ms(2000.0)).is_empty());
}

#[test]
fn shutdown_hold_ends_at_its_deadline_when_no_master_speaks() {
    let mut instance = master(v3(200, 10));
    instance.shutdown(at_ms(500.0));
    drain(&mut instance);
    let hold = wimark_ha::vrrp::SHUTDOWN_VIP_HOLD;
    assert!(run_until(&mut instance, at_ms(500.0) + (hold - ms(1))).is_empty());
    assert_eq!(
        run_until(&mut instance, at_ms(500.0) + hold),
        vec![Action::RemoveVirtualIps]
    );
    assert_eq!(instance.poll_timeout(), None);
}

#[test]
fn shutdown_of_a_backup_sends_nothing_and_times_nothing() {
    let mut instance = Instance::new(v3(100, 10));
    instance.start(at_ms(0.0));
    drain(&mut instance);
    instance.shutdown(at_ms(5.0));
    assert_eq!(
        transitions(&drain(&mut instance)),
        vec![(State::Backup, State::Initialize, Reason::Shutdown)]
    );
    assert_eq!(instance.poll_timeout(), None);
}

#[test]
fn restart_hold_sends_one_advert_that_makes_the_backup_wait_and_then_nothing() {
    let params = fast_params();
    let mut instance = master(params.clone());
    let hold = Duration::from_secs(5);
    assert!(instance.restart_hold(at_ms(200.0), hold));
    let actions = drain(&mut instance);
    let held = Advert {
        interval: wimark_ha::vrrp::hold_interval(hold),
        ..advert(&params, 200, params.advert_interval)
    };
    assert_eq!(
        actions,
        vec![
            Action::Heartbeat(Heartbeat::Stop),
            Action::SendAdvert(held.clone())
        ],
        "the fast stream stops before the hold advert goes out"
    );
    assert_eq!(
        instance.state(),
        State::Master,
        "still master: the VIPs stay"
    );
    assert_eq!(
        instance.poll_timeout(),
        None,
        "no more adverts from this process"
    );
    // A backup that hears it waits the hold (RFC 5798 §6.4.2: it learns
    // Master_Adver_Interval), and its fast rule does not judge the silence.
    let mut backup = Instance::new(Params {
        primary_address: ip(PEER_LOW),
        ..v3(100, 10)
    });
    backup.start(at_ms(0.0));
    for n in 0..5 {
        let t = at_ms(1.0 + n as f64);
        backup
            .handle_advert(t, ip(LOCAL), &advert(&params, 200, ms(10)), t)
            .expect("heard");
    }
    backup
        .handle_advert(at_ms(6.0), ip(LOCAL), &held, at_ms(6.0))
        .expect("heard");
    drain(&mut backup);
    assert!(
        run_until(&mut backup, at_ms(6.0) + (hold - ms(1))).is_empty(),
        "the backup waits the whole hold"
    );
    // A backup is not held.
    assert!(!backup.restart_hold(at_ms(7.0), hold));
    assert!(drain(&mut backup).is_empty());
}

#[test]
fn shutdown_of_a_backup_sends_nothing() {
    let mut instance = Instance::new(v3(200, 10));
    instance.start(at_ms(0.0));
    drain(&mut instance);
    instance.shutdown(at_ms(1.0));
    assert_eq!(
        drain(&mut instance),
        vec![Action::Transition {
            from: State::Backup,
            to: State::Initialize,
            reason: Reason::Shutdown,
            silence: None
        }]
    );
}

// ===== RFC 3768 §7.1 receive checks (v2) and VRID =====

#[test]
fn v2_checks_auth_interval_and_vrid() {
    let params = v2_vendor();
    let mut instance = Instance::new(params.clone());
    instance.start(at_ms(0.0));
    drain(&mut instance);
    let good = advert(&params, 250, Duration::from_secs(1));
    let wrong_password = Advert {
        auth: Auth::password("guess"),
        ..good.clone()
    };
    let wrong_interval = Advert {
        interval: Duration::from_secs(2),
        ..good.clone()
    };
    let wrong_vrid = Advert {
        vrid: 68,
        ..good.clone()
    };
    let t = at_ms(100.0);
    assert_eq!(
        instance.handle_advert(t, ip(PEER_HIGH), &wrong_password, t),
        Err(Ignored::Auth)
    );
    assert_eq!(
        instance.handle_advert(t, ip(PEER_HIGH), &wrong_interval, t),
        Err(Ignored::Interval(Duration::from_secs(2)))
    );
    assert_eq!(
        instance.handle_advert(t, ip(PEER_HIGH), &wrong_vrid, t),
        Err(Ignored::OtherVrid(68))
    );
    assert_eq!(
        instance.handle_advert(t, ip(LOCAL), &good, t),
        Err(Ignored::Own)
    );
    // None of them reset the timer: still the startup deadline.
    assert_eq!(instance.poll_timeout(), Some(Timestamp(3_218_750_000)));
    instance
        .handle_advert(t, ip(PEER_HIGH), &good, t)
        .expect("the right one is accepted");
    assert_eq!(
        instance.poll_timeout(),
        Some(t + Duration::from_micros(3_218_750))
    );
}

// ===== fast detection =====

fn fast_params() -> Params {
    Params {
        fast_detect: Some(FastDetect {
            interval: ms(1),
            multiplier: Multiplier::Fixed(3),
        }),
        // Two routers: the fast rule needs no priority skew.
        sole_peer: true,
        ..v3(200, 10)
    }
}

#[test]
fn fast_rule_declares_a_fast_master_down_after_multiplier_intervals() {
    let params = fast_params();
    let mut instance = Instance::new(params.clone());
    instance.start(at_ms(0.0));
    drain(&mut instance);
    for n in 1..=2050 {
        let t = at_ms(n as f64);
        instance
            .handle_advert(t, ip(PEER_HIGH), &advert(&params, 250, ms(10)), t)
            .expect("ok");
        assert!(run_until(&mut instance, t + Duration::from_micros(900)).is_empty());
    }
    // Last advert at 2050 ms (past the warm-up): down at 2053 ms, long
    // before the RFC's 2082 ms.
    assert_eq!(instance.poll_timeout(), Some(at_ms(2053.0)));
    let actions = run_until(&mut instance, at_ms(2053.0));
    assert_eq!(
        transitions(&actions),
        vec![(State::Backup, State::Master, Reason::FastDetect)]
    );
}

#[test]
fn fast_rule_never_judges_a_master_at_rfc_rates() {
    let params = fast_params();
    let mut instance = Instance::new(params.clone());
    instance.start(at_ms(0.0));
    drain(&mut instance);
    // keepalived at 10 ms: adverts 10 ms apart, 4 ms of jitter.
    for n in 1..=50 {
        let t = at_ms(n as f64 * 10.0 + if n % 2 == 0 { 4.0 } else { 0.0 });
        instance
            .handle_advert(t, ip(PEER_HIGH), &advert(&params, 250, ms(10)), t)
            .expect("ok");
        let next = at_ms((n + 1) as f64 * 10.0);
        assert!(
            run_until(&mut instance, next).is_empty(),
            "taken over between adverts at {n}"
        );
    }
    assert_eq!(instance.state(), State::Backup);
}

#[test]
fn a_stall_that_ends_just_after_the_deadline_is_a_stall_too() {
    let params = fast_params();
    let stream = |instance: &mut Instance| {
        instance.start(at_ms(0.0));
        drain(instance);
        for n in 1..=2010 {
            let t = at_ms(n as f64);
            instance
                .handle_advert(t, ip(PEER_HIGH), &advert(&params, 250, ms(10)), t)
                .expect("ok");
        }
    };
    // Deadline 2013 ms. The VM stalled from 2010.5 to 2013.5 ms: we wake
    // 0.5 ms late, less than an interval, and the master's senders were
    // stalled as long.
    let mut instance = Instance::new(params.clone());
    stream(&mut instance);
    instance.handle_timeout(at_ms(2013.5));
    assert!(drain(&mut instance).is_empty(), "late by more than a quarter interval: a grace");
    instance
        .handle_advert(at_ms(2013.7), ip(PEER_HIGH), &advert(&params, 250, ms(10)), at_ms(2013.6))
        .expect("ok");
    assert!(run_until(&mut instance, at_ms(2014.5)).is_empty());
    assert_eq!(instance.state(), State::Backup);
    // On time (a realtime timer's tens of microseconds): believed at once.
    let mut instance = Instance::new(params.clone());
    stream(&mut instance);
    instance.handle_timeout(at_ms(2013.05));
    assert_eq!(
        transitions(&drain(&mut instance)),
        vec![(State::Backup, State::Master, Reason::FastDetect)]
    );
}

#[test]
fn a_late_wakeup_gives_the_peer_one_more_fast_interval() {
    let params = fast_params();
    let mut instance = Instance::new(params.clone());
    instance.start(at_ms(0.0));
    drain(&mut instance);
    for n in 1..=2010 {
        let t = at_ms(n as f64);
        instance
            .handle_advert(t, ip(PEER_HIGH), &advert(&params, 250, ms(10)), t)
            .expect("ok");
    }
    // Deadline 2013 ms, but we (the VM) stalled and wake at 2020 ms.
    instance.handle_timeout(at_ms(2020.0));
    assert!(
        drain(&mut instance).is_empty(),
        "no takeover straight after our own stall"
    );
    assert_eq!(instance.poll_timeout(), Some(at_ms(2021.0)));
    // The peer is alive: its advert (kernel-stamped at 2020.5 ms) arrives.
    instance
        .handle_advert(
            at_ms(2020.6),
            ip(PEER_HIGH),
            &advert(&params, 250, ms(10)),
            at_ms(2020.5),
        )
        .expect("ok");
    instance
        .handle_advert(
            at_ms(2021.2),
            ip(PEER_HIGH),
            &advert(&params, 250, ms(10)),
            at_ms(2021.1),
        )
        .expect("ok");
    assert!(run_until(&mut instance, at_ms(2024.0)).is_empty());
    assert_eq!(instance.state(), State::Backup);
    // Truly silent after that: down after one grace at most.
    let actions = run_until(&mut instance, at_ms(2030.0));
    assert_eq!(
        transitions(&actions),
        vec![(State::Backup, State::Master, Reason::FastDetect)]
    );
}

#[test]
fn a_late_wakeup_with_a_dead_peer_still_fails_over_after_the_grace() {
    let params = fast_params();
    let mut instance = Instance::new(params.clone());
    instance.start(at_ms(0.0));
    drain(&mut instance);
    for n in 1..=2010 {
        let t = at_ms(n as f64);
        instance
            .handle_advert(t, ip(PEER_HIGH), &advert(&params, 250, ms(10)), t)
            .expect("ok");
    }
    instance.handle_timeout(at_ms(2020.0));
    assert!(drain(&mut instance).is_empty());
    instance.handle_timeout(at_ms(2021.0));
    assert_eq!(
        transitions(&drain(&mut instance)),
        vec![(State::Backup, State::Master, Reason::FastDetect)]
    );
}

// ===== two routers on a simulated wire =====

/// Two instances exchanging adverts with no loss and `delay` on the wire;
/// `alive[i]` false silences router i (its daemon is gone).
struct Pair {
    routers: [Instance; 2],
    addresses: [IpAddr; 2],
    alive: [bool; 2],
    now: Timestamp,
    delay: Duration,
    in_flight: Vec<(Timestamp, usize, Advert)>,
    /// Each router's fast stream as its senders run it: (advert, every,
    /// lease end, next send).
    streams: [Option<(Advert, Duration, Timestamp, Timestamp)>; 2],
    /// Every action of every router, in order.
    log: Vec<(usize, Action)>,
}

impl Pair {
    fn new(a: Params, b: Params) -> Self {
        let addresses = [a.primary_address, b.primary_address];
        let mut pair = Self {
            routers: [Instance::new(a), Instance::new(b)],
            addresses,
            alive: [true, true],
            now: Timestamp(0),
            delay: Duration::from_micros(50),
            in_flight: Vec::new(),
            streams: [None, None],
            log: Vec::new(),
        };
        for i in 0..2 {
            pair.routers[i].start(pair.now);
            pair.collect(i);
        }
        pair
    }

    fn collect(&mut self, i: usize) {
        while let Some(action) = self.routers[i].poll_action() {
            self.log.push((i, action.clone()));
            match action {
                Action::SendAdvert(advert) if self.alive[i] => {
                    self.in_flight.push((self.now + self.delay, 1 - i, advert));
                }
                Action::Heartbeat(Heartbeat::Send {
                    advert,
                    every,
                    until,
                }) => {
                    // A renewal keeps the cadence; a new order starts one.
                    let next = match &self.streams[i] {
                        Some((a, e, _, next)) if *a == advert && *e == every => *next,
                        _ => self.now + every,
                    };
                    self.streams[i] = Some((advert, every, until, next));
                }
                Action::Heartbeat(Heartbeat::Stop) => self.streams[i] = None,
                _ => {}
            }
        }
    }

    /// The next fast advert a live router's senders send, if any.
    fn next_stream_send(&self) -> Option<(Timestamp, usize)> {
        (0..2)
            .filter(|i| self.alive[*i])
            .filter_map(|i| {
                let (_, _, until, next) = self.streams[i].as_ref()?;
                (next < until).then_some((*next, i))
            })
            .min()
    }

    /// Advances to the next event (delivery or timeout), up to `until`.
    fn drive(&mut self, until: Timestamp) {
        loop {
            let next_delivery = self.in_flight.iter().map(|(t, _, _)| *t).min();
            let next_timeout = (0..2)
                .filter(|i| self.alive[*i])
                .filter_map(|i| self.routers[i].poll_timeout())
                .min();
            let next_send = self.next_stream_send();
            let Some(next) = [next_delivery, next_timeout, next_send.map(|(t, _)| t)]
                .into_iter()
                .flatten()
                .min()
            else {
                return;
            };
            if next > until {
                self.now = until;
                return;
            }
            self.now = next;
            if let Some((_, i)) = next_send.filter(|(t, _)| *t == next) {
                let stream = self.streams[i].as_mut().expect("stream");
                stream.3 = stream.3 + stream.1;
                let advert = stream.0.clone();
                self.in_flight.push((self.now + self.delay, 1 - i, advert));
            } else if next_delivery == Some(next) {
                let index = self
                    .in_flight
                    .iter()
                    .position(|(t, _, _)| *t == next)
                    .expect("found");
                let (at, to, advert) = self.in_flight.remove(index);
                if self.alive[to] {
                    let _ = self.routers[to].handle_advert(
                        self.now,
                        self.addresses[1 - to],
                        &advert,
                        at,
                    );
                    self.collect(to);
                }
            } else {
                for i in 0..2 {
                    if self.alive[i] && self.routers[i].poll_timeout() == Some(next) {
                        self.routers[i].handle_timeout(self.now);
                        self.collect(i);
                    }
                }
            }
        }
    }

    fn states(&self) -> [State; 2] {
        [self.routers[0].state(), self.routers[1].state()]
    }
}

#[test]
fn two_routers_elect_one_master_and_the_other_takes_over_when_it_dies() {
    let a = Params {
        primary_address: ip(PEER_LOW),
        ..v3(200, 10)
    };
    let b = Params {
        primary_address: ip(PEER_HIGH),
        ..v3(200, 10)
    };
    let mut pair = Pair::new(a, b);
    pair.drive(at_ms(1000.0));
    // Same priority: the higher address wins (RFC 5798 §6.4.3).
    assert_eq!(pair.states(), [State::Backup, State::Master]);
    pair.alive[1] = false;
    let died = pair.now;
    pair.drive(died + ms(40));
    assert_eq!(
        pair.states()[0],
        State::Master,
        "backup took over within Master_Down_Interval"
    );
}

#[test]
fn fast_pair_fails_over_within_a_few_milliseconds_and_preempts_back() {
    let a = Params {
        primary_address: ip(PEER_LOW),
        ..fast_params()
    };
    let b = Params {
        primary_address: ip(PEER_HIGH),
        priority: 250,
        ..fast_params()
    };
    let mut pair = Pair::new(a, b);
    // Past the fast rule's warm-up.
    pair.drive(at_ms(2500.0));
    assert_eq!(pair.states(), [State::Backup, State::Master]);
    pair.alive[1] = false;
    pair.drive(at_ms(2504.0));
    assert_eq!(pair.states()[0], State::Master, "1 ms x 3 fast rule");
    // B comes back with higher priority and preempts.
    pair.alive[1] = true;
    pair.routers[1] = Instance::new(Params {
        primary_address: ip(PEER_HIGH),
        priority: 250,
        ..fast_params()
    });
    pair.routers[1].start(pair.now);
    pair.collect(1);
    pair.drive(at_ms(2700.0));
    assert_eq!(pair.states(), [State::Backup, State::Master]);
}

#[test]
fn switchover_resigns_and_does_not_preempt_back() {
    let a = Params {
        primary_address: ip(PEER_LOW),
        priority: 250,
        ..v3(250, 10)
    };
    let b = Params {
        primary_address: ip(PEER_HIGH),
        ..v3(100, 10)
    };
    let mut pair = Pair::new(a, b);
    pair.drive(at_ms(500.0));
    assert_eq!(pair.states(), [State::Master, State::Backup]);
    let t = pair.now;
    pair.routers[0].resign(t);
    let actions: Vec<Action> = std::iter::from_fn(|| pair.routers[0].poll_action()).collect();
    assert_eq!(actions[0], sends(0));
    assert!(
        !actions.contains(&Action::RemoveVirtualIps),
        "VIPs kept until the new master speaks"
    );
    assert_eq!(
        transitions(&actions),
        vec![(State::Master, State::Backup, Reason::Switchover)]
    );
    // Put the resignation on the wire by hand (collect() already drained).
    let resign = advert(pair.routers[0].params(), 0, ms(10));
    pair.in_flight.push((t + pair.delay, 1, resign));
    // B takes over after its skew time: (256-100)/256 * 10 ms = 6.1 ms.
    pair.drive(t + ms(7));
    assert_eq!(pair.states(), [State::Backup, State::Master]);
    // B's first advert as master made A release the VIPs, not earlier.
    let released = pair
        .log
        .iter()
        .position(|(i, a)| *i == 0 && *a == Action::RemoveVirtualIps);
    let b_master = pair.log.iter().position(|(i, a)| {
        *i == 1
            && matches!(
                a,
                Action::Transition {
                    to: State::Master,
                    ..
                }
            )
    });
    assert!(released.is_some() && released > b_master, "{:?}", pair.log);
    // A has the higher priority but yielded: it stays backup.
    pair.drive(t + ms(1000));
    assert_eq!(pair.states(), [State::Backup, State::Master]);
}

/// A fast pair where A (250) was master and handed over to B (100).
fn handed_over_fast_pair() -> Pair {
    let a = Params {
        primary_address: ip(PEER_LOW),
        priority: 250,
        ..fast_params()
    };
    let b = Params {
        primary_address: ip(PEER_HIGH),
        priority: 100,
        ..fast_params()
    };
    let mut pair = Pair::new(a, b);
    pair.drive(at_ms(2500.0));
    assert_eq!(pair.states(), [State::Master, State::Backup]);
    let t = pair.now;
    pair.routers[0].resign(t);
    pair.collect(0);
    pair.drive(t + ms(20));
    assert_eq!(pair.states(), [State::Backup, State::Master]);
    pair
}

/// After a switchover the old master stays backup whatever a transient
/// silence says: the fast rule stands aside (a few ms of silence from the
/// new master are not its death), the RFC Master_Down_Interval still
/// answers a real death, and `switchover --back` (reclaim) lets the higher
/// priority preempt again.
#[test]
fn a_handed_over_node_ignores_transient_silence_until_reclaimed() {
    let mut pair = handed_over_fast_pair();
    assert!(pair.routers[0].handed_over());
    // A 5 ms silence of the new master (its CPU stalled): 1 ms x 3 would
    // have fired, a handed-over node does not take over.
    let silent_from = pair.now;
    pair.alive[1] = false;
    pair.drive(silent_from + ms(5));
    pair.in_flight.clear();
    pair.alive[1] = true;
    pair.routers[1].handle_timeout(pair.now);
    pair.collect(1);
    pair.drive(silent_from + ms(300));
    assert_eq!(
        pair.states(),
        [State::Backup, State::Master],
        "the switchover stands: {:?}",
        transitions(
            &pair
                .log
                .iter()
                .filter(|(i, _)| *i == 0)
                .map(|(_, a)| a.clone())
                .collect::<Vec<_>>()
        )
    );
    // The operator ends the maintenance: A's priority preempts again.
    let reclaimed_at = pair.now;
    assert!(pair.routers[0].reclaim(reclaimed_at));
    assert!(!pair.routers[0].reclaim(reclaimed_at), "only once");
    pair.drive(reclaimed_at + ms(100));
    assert_eq!(pair.states(), [State::Master, State::Backup]);
    assert!(!pair.routers[0].handed_over());
}

/// A handed-over node still takes over when the new master really dies:
/// Master_Down_Interval, not the fast rule.
#[test]
fn a_handed_over_node_takes_over_when_the_new_master_dies() {
    let mut pair = handed_over_fast_pair();
    let died = pair.now;
    pair.alive[1] = false;
    pair.drive(died + ms(10));
    assert_eq!(
        pair.states()[0],
        State::Backup,
        "not at the fast rule's 3 ms"
    );
    let master_down = pair.routers[0].master_down_interval();
    pair.drive(died + master_down + ms(2));
    assert_eq!(pair.states()[0], State::Master, "at Master_Down_Interval");
    assert!(
        !pair.routers[0].handed_over(),
        "master again: the hand-over is over"
    );
}

#[test]
fn resignation_of_a_fast_master_uses_the_fast_skew() {
    let params = fast_params();
    let mut instance = Instance::new(params.clone());
    instance.start(at_ms(0.0));
    drain(&mut instance);
    for n in 1..=2010 {
        let t = at_ms(n as f64);
        instance
            .handle_advert(t, ip(PEER_HIGH), &advert(&params, 250, ms(10)), t)
            .expect("ok");
    }
    instance
        .handle_advert(
            at_ms(2010.5),
            ip(PEER_HIGH),
            &advert(&params, 0, ms(10)),
            at_ms(2010.5),
        )
        .expect("ok");
    // (256 - 200) / 256 * 1 ms = 0.21875 ms, not 2.1875 ms.
    assert_eq!(
        instance.poll_timeout(),
        Some(Timestamp(2_010_500_000 + 218_750))
    );
    let actions = run_until(&mut instance, at_ms(2011.0));
    assert_eq!(
        transitions(&actions),
        vec![(State::Backup, State::Master, Reason::PeerResigned)]
    );
}

#[test]
fn interface_down_faults_releasing_the_vips_and_up_starts_over() {
    let params = v3(200, 10);
    let mut instance = master(params.clone());
    instance.interface_down(at_ms(500.0));
    let actions = drain(&mut instance);
    // keepalived's resignation on leaving MASTER for FAULT, then the VIPs.
    assert_eq!(actions[..2], [sends(0), Action::RemoveVirtualIps]);
    assert_eq!(
        transitions(&actions),
        vec![(State::Master, State::Fault, Reason::InterfaceDown)]
    );
    assert_eq!(
        instance.poll_timeout(),
        None,
        "no adverts, no timers while the link is down"
    );
    // Adverts (if any slipped through) change nothing in FAULT.
    let t = at_ms(501.0);
    instance
        .handle_advert(t, ip(PEER_HIGH), &advert(&params, 250, ms(10)), t)
        .expect("ignored quietly");
    assert!(drain(&mut instance).is_empty());
    instance.interface_up(at_ms(600.0));
    assert_eq!(
        transitions(&drain(&mut instance)),
        vec![(State::Fault, State::Backup, Reason::InterfaceUp)]
    );
    assert_eq!(
        instance.poll_timeout(),
        Some(at_ms(600.0) + instance.master_down_interval())
    );
}

#[test]
fn a_stall_longer_than_master_down_interval_still_gets_the_grace() {
    let params = fast_params();
    let mut instance = Instance::new(params.clone());
    instance.start(at_ms(0.0));
    drain(&mut instance);
    for n in 1..=2010 {
        let t = at_ms(n as f64);
        instance
            .handle_advert(t, ip(PEER_HIGH), &advert(&params, 250, ms(10)), t)
            .expect("ok");
    }
    // Last advert at 2010 ms: fast deadline 2013 ms, Master_Down 2042.2 ms.
    // We wake at 2060 ms, past both: no takeover yet, one fast interval of grace.
    instance.handle_timeout(at_ms(2060.0));
    assert!(drain(&mut instance).is_empty());
    assert_eq!(instance.poll_timeout(), Some(at_ms(2061.0)));
    // The peer was alive all along: its advert arrives in the grace.
    instance
        .handle_advert(
            at_ms(2060.5),
            ip(PEER_HIGH),
            &advert(&params, 250, ms(10)),
            at_ms(2060.4),
        )
        .expect("ok");
    instance.handle_timeout(at_ms(2061.0));
    assert!(
        drain(&mut instance).is_empty(),
        "no takeover from our own stall"
    );
    assert_eq!(instance.state(), State::Backup);
}

#[test]
fn the_rfc_timer_woken_late_gives_the_master_a_grace_too() {
    // No fast detection: only the Master_Down_Timer judges (a learning
    // auto window, a keepalived master, or fast detection off).
    let params = v3(100, 10);
    let mut instance = Instance::new(params.clone());
    instance.start(at_ms(0.0));
    drain(&mut instance);
    let master = |instance: &mut Instance, at: f64| {
        instance
            .handle_advert(at_ms(at), ip(PEER_HIGH), &advert(&params, 250, ms(10)), at_ms(at))
            .expect("ok")
    };
    master(&mut instance, 100.0);
    // Master_Down 100 + 30 + 6.1 ms; we (the VM) stall and wake at 190 ms.
    let deadline = instance.poll_timeout().expect("master down");
    instance.handle_timeout(at_ms(190.0));
    assert!(drain(&mut instance).is_empty(), "no takeover straight after our own stall");
    assert_eq!(instance.poll_timeout(), Some(at_ms(191.0)));
    // The master had stalled with us: its advert comes within the grace.
    master(&mut instance, 190.4);
    instance.handle_timeout(at_ms(191.0));
    assert!(drain(&mut instance).is_empty());
    assert_eq!(instance.state(), State::Backup);
    assert!(deadline < at_ms(190.0));
    // Once per silence: woken late again with no advert, the grace is
    // spent — the next lateness of the same silence is believed.
    let next = instance.poll_timeout().expect("master down");
    instance.handle_timeout(next + ms(5));
    assert!(drain(&mut instance).is_empty(), "a new silence, a new grace");
    instance.handle_timeout(next + ms(20));
    assert_eq!(
        transitions(&drain(&mut instance)),
        vec![(State::Backup, State::Master, Reason::MasterDown)],
        "a dead master costs one grace, then the RFC rule holds"
    );
    // On time (not late), the timer fires at once, as the RFC says: shown
    // by `master_down_timer_fires_into_master_advert_then_vip_and_garp`.
}

// ===== A zero advert interval (found by fuzzing the decoder) =====

#[test]
fn a_zero_interval_advert_is_ignored_and_does_not_shrink_master_down() {
    let params = v3(100, 10);
    let mut instance = Instance::new(params.clone());
    instance.start(at_ms(0.0));
    drain(&mut instance);
    let before = instance.poll_timeout();
    // A higher-priority "master" advertising every 0 cs.
    let zero = advert(&params, 200, Duration::ZERO);
    assert_eq!(
        instance.handle_advert(at_ms(1.0), ip("10.77.0.9"), &zero, at_ms(1.0)),
        Err(Ignored::Interval(Duration::ZERO))
    );
    assert_eq!(instance.state(), State::Backup);
    assert_eq!(instance.poll_timeout(), before, "the timer is untouched");
    assert!(instance.master().is_none(), "not learned as the master");
}

#[test]
fn an_advert_heard_twice_over_two_links_never_brings_the_deadlines_forward() {
    // With heartbeat links the same advert arrives once per link; the engine
    // feeds both copies as from the one peer, the slower copy possibly
    // after a newer advert. RFC 5798 §6.4.2 resets Master_Down_Timer on each
    // advert; the reset must count from the latest one heard.
    let params = fast_params();
    let mut instance = Instance::new(params.clone());
    instance.start(at_ms(0.0));
    drain(&mut instance);
    let from_peer = advert(&params, 250, ms(10));
    for n in 1..=2020 {
        let t = at_ms(n as f64);
        // Link 1 delivers the advert at t, link 2 its copy 0.3 ms earlier
        // (kernel timestamp), drained after it.
        instance
            .handle_advert(t, ip(PEER_HIGH), &from_peer, t)
            .expect("ok");
        let copy = Timestamp(t.0 - 300_000);
        instance
            .handle_advert(t, ip(PEER_HIGH), &from_peer, copy)
            .expect("ok");
        assert!(run_until(&mut instance, t + Duration::from_micros(900)).is_empty());
    }
    // The fast rule and the RFC timer both count from 2020 ms, not 2019.7 ms.
    assert_eq!(instance.poll_timeout(), Some(at_ms(2023.0)));
    assert_eq!(instance.state(), State::Backup);
    // Silence on both links: the fast rule declares the master down.
    let actions = run_until(&mut instance, at_ms(2023.0));
    assert_eq!(
        transitions(&actions),
        vec![(State::Backup, State::Master, Reason::FastDetect)]
    );
    // Without fast detection the RFC timer alone shows it.
    let params = v3(200, 10);
    let mut instance = Instance::new(params.clone());
    instance.start(at_ms(0.0));
    drain(&mut instance);
    let from_peer = advert(&params, 250, ms(10));
    instance
        .handle_advert(at_ms(2010.0), ip(PEER_HIGH), &from_peer, at_ms(2010.0))
        .expect("ok");
    instance
        .handle_advert(at_ms(2010.0), ip(PEER_HIGH), &from_peer, at_ms(2009.7))
        .expect("ok");
    assert_eq!(
        instance.poll_timeout(),
        Some(at_ms(2010.0) + instance.master_down_interval())
    );
}

#[test]
fn a_restart_hold_advert_makes_the_backup_wait_and_fast_detection_stand_aside() {
    // wimark-ha's restart in place: the master's last advert carries a Max
    // Adver Int of a third of the hold; RFC 5798 §6.4.2 makes the backup
    // learn it, so Master_Down_Interval covers the hold.
    let hold = Duration::from_secs(3);
    let interval = wimark_ha::vrrp::hold_interval(hold);
    assert_eq!(interval, ms(1000));
    assert_eq!(
        wimark_ha::vrrp::hold_interval(ms(100)),
        ms(40),
        "rounded up to centiseconds"
    );
    assert_eq!(
        wimark_ha::vrrp::hold_interval(Duration::from_secs(600)),
        ms(40_950)
    );
    let params = fast_params();
    let mut instance = Instance::new(params.clone());
    instance.start(at_ms(0.0));
    drain(&mut instance);
    for n in 1..=2020 {
        let t = at_ms(n as f64);
        instance
            .handle_advert(t, ip(PEER_HIGH), &advert(&params, 250, ms(10)), t)
            .expect("ok");
        run_until(&mut instance, t + Duration::from_micros(900));
    }
    let last = at_ms(2020.5);
    instance
        .handle_advert(last, ip(PEER_HIGH), &advert(&params, 250, interval), last)
        .expect("ok");
    let down = last + 3 * interval + instance.skew_time();
    assert!(3 * interval + instance.skew_time() >= hold);
    assert_eq!(
        instance.poll_timeout(),
        Some(down),
        "only the RFC timer runs"
    );
    assert!(
        run_until(&mut instance, at_ms(4_000.0)).is_empty(),
        "no fast takeover"
    );
    // The restarted master speaks again at its normal rate: fast detection
    // is back once its new stream has run the warm-up (a stream's first
    // seconds are its least punctual), the RFC timer judges meanwhile.
    for n in 0..3 {
        let t = at_ms(4_000.0 + n as f64);
        instance
            .handle_advert(t, ip(PEER_HIGH), &advert(&params, 250, ms(10)), t)
            .expect("ok");
    }
    assert_eq!(
        instance.poll_timeout(),
        Some(at_ms(4_002.0) + instance.master_down_interval())
    );
    let warm = 4_000.0 + FAST_RULE_WARMUP.as_millis() as f64;
    for n in 3..=(warm as u64 - 4_000) {
        let t = at_ms(4_000.0 + n as f64);
        instance
            .handle_advert(t, ip(PEER_HIGH), &advert(&params, 250, ms(10)), t)
            .expect("ok");
    }
    assert_eq!(instance.poll_timeout(), Some(at_ms(warm + 3.0)));
    // And a master that never comes back is declared down after the hold.
    let mut silent = Instance::new(params.clone());
    silent.start(at_ms(0.0));
    drain(&mut silent);
    for n in 1..=5 {
        let t = at_ms(n as f64);
        silent
            .handle_advert(t, ip(PEER_HIGH), &advert(&params, 250, ms(10)), t)
            .expect("ok");
    }
    silent
        .handle_advert(
            at_ms(5.5),
            ip(PEER_HIGH),
            &advert(&params, 250, interval),
            at_ms(5.5),
        )
        .expect("ok");
    let actions = run_until(&mut silent, at_ms(5.5) + hold + ms(500));
    assert_eq!(
        transitions(&actions),
        vec![(State::Backup, State::Master, Reason::MasterDown)]
    );
}

#[test]
fn resume_master_after_a_restart_hold_goes_straight_to_master() {
    let params = fast_params();
    let mut instance = Instance::new(params);
    instance.resume_master(at_ms(0.0));
    let actions = drain(&mut instance);
    assert_eq!(
        actions[..3],
        [
            sends(200),
            Action::AddVirtualIps,
            Action::AnnounceVirtualIps,
        ]
    );
    assert_eq!(
        transitions(&actions),
        vec![(State::Initialize, State::Master, Reason::RestartHold)]
    );
    // Only from Initialize.
    instance.resume_master(at_ms(1.0));
    assert!(drain(&mut instance).is_empty());
}

// ===== issue 13: the fast rule on a noisy host, more than two nodes =====

/// Feeds the master's fast stream (1 ms) from `from` to `to` ms, running the
/// timers between adverts as the runtime would; returns every action.
fn stream(instance: &mut Instance, from: u64, to: u64, priority: u8) -> Vec<Action> {
    let params = instance.params().clone();
    let mut actions = Vec::new();
    for n in from..=to {
        let t = at_ms(n as f64);
        let _ = instance.handle_advert(t, ip(PEER_HIGH), &advert(&params, priority, ms(10)), t);
        actions.extend(drain(instance));
        actions.extend(run_until(instance, t + Duration::from_micros(900)));
    }
    actions
}

#[test]
fn a_stream_younger_than_the_warm_up_never_arms_the_fast_rule() {
    // Start-up is when a master's sender is least punctual: a 10 ms stall
    // 1.5 s into the stream is not a takeover (1 ms x 3 would have fired).
    let mut instance = Instance::new(fast_params());
    instance.start(at_ms(0.0));
    drain(&mut instance);
    assert!(stream(&mut instance, 1, 1500, 250).is_empty());
    assert_eq!(
        instance.poll_timeout(),
        Some(at_ms(1500.0) + instance.master_down_interval()),
        "only the RFC timer runs"
    );
    assert!(run_until(&mut instance, at_ms(1510.0)).is_empty());
    assert!(stream(&mut instance, 1510, 2100, 250).is_empty());
    assert_eq!(instance.state(), State::Backup);
    // Past the warm-up the fast rule is armed.
    assert_eq!(instance.poll_timeout(), Some(at_ms(2103.0)));
    assert!(instance.detection().expect("fast detection").armed);
}

#[test]
fn the_fast_rule_is_ordered_by_priority_when_other_backups_may_compete() {
    // Three nodes, 200 (master), 150 and 100, no single peer configured:
    // the fast rule carries Skew_Time's order, so the 150 fires first and
    // its advert (RFC 5798 §6.4.2: sent before the gratuitous ARP) reaches
    // the 100 before the 100's own deadline.
    let backup = |priority: u8, address: &str| {
        let mut instance = Instance::new(Params {
            priority,
            primary_address: ip(address),
            sole_peer: false,
            ..fast_params()
        });
        instance.start(at_ms(0.0));
        drain(&mut instance);
        instance
    };
    let mut high = backup(150, "10.77.0.2");
    let mut low = backup(100, "10.77.0.4");
    assert!(stream(&mut high, 1, 2100, 200).is_empty());
    assert!(stream(&mut low, 1, 2100, 200).is_empty());
    let (high_at, low_at) = (high.poll_timeout().unwrap(), low.poll_timeout().unwrap());
    // 3 ms + (256 - p) / 256 of max(window, 20 ms): the order must outlast
    // a stall of the higher backup, which a 3 ms window's fraction did not.
    assert_eq!(wimark_ha::vrrp::FAST_SKEW_SPAN_MIN, ms(20));
    assert_eq!(high_at, at_ms(2103.0) + Duration::from_nanos(20_000_000 * 106 / 256));
    assert_eq!(low_at, at_ms(2103.0) + Duration::from_nanos(20_000_000 * 156 / 256));
    assert!(low_at.saturating_since(high_at) > ms(3), "the margin between 150 and 100");
    high.handle_timeout(high_at);
    let actions = drain(&mut high);
    let Action::SendAdvert(first) = &actions[0] else {
        panic!("the advert first: {actions:?}");
    };
    // The 150's advert is on the 100's wire 50 µs later, before its deadline.
    let heard = high_at + Duration::from_micros(50);
    assert!(heard < low_at);
    low.handle_advert(heard, ip("10.77.0.2"), first, heard)
        .expect("followed");
    // Until well past its own fast deadline (the 150's stream would keep
    // it backup for good; one advert is enough for the order).
    let after = run_until(&mut low, low_at + ms(10));
    assert!(
        !after
            .iter()
            .any(|a| matches!(a, Action::SendAdvert(_) | Action::AnnounceVirtualIps)),
        "no advert and no gratuitous ARP from the 100: {after:?}"
    );
    assert_eq!(low.state(), State::Backup);
    assert_eq!(low.master(), Some(ip("10.77.0.2")));
    // With one peer named, no skew: a pair loses nothing to the order.
    let pair = Instance::new(fast_params());
    assert_eq!(pair.fast_rule_skew(ms(3)), Duration::ZERO);
}

#[test]
fn a_master_heard_again_after_a_fast_takeover_was_a_false_takeover() {
    let mut instance = Instance::new(fast_params());
    instance.start(at_ms(0.0));
    drain(&mut instance);
    assert!(stream(&mut instance, 1, 2100, 250).is_empty());
    // The master stalls 5 ms: the fast rule fires at 2103 ms.
    let actions = run_until(&mut instance, at_ms(2104.0));
    assert_eq!(
        transitions(&actions),
        vec![(State::Backup, State::Master, Reason::FastDetect)]
    );
    // Its advert, kernel-stamped at 2105 ms: it was late, not dead.
    let params = instance.params().clone();
    instance
        .handle_advert(
            at_ms(2105.1),
            ip(PEER_HIGH),
            &advert(&params, 250, ms(10)),
            at_ms(2105.0),
        )
        .expect("the higher priority preempts");
    let actions = drain(&mut instance);
    assert_eq!(
        actions[0],
        Action::FalseTakeover {
            peer: ip(PEER_HIGH),
            gap: ms(5),
            window: ms(3),
        }
    );
    assert_eq!(
        transitions(&actions),
        vec![(State::Master, State::Backup, Reason::PreemptedByPeer)]
    );
    assert_eq!(instance.detection().unwrap().false_takeovers, 1);
    // A master that is really dead says nothing: no false takeover.
    let mut instance = Instance::new(fast_params());
    instance.start(at_ms(0.0));
    drain(&mut instance);
    stream(&mut instance, 1, 2100, 250);
    let actions = run_until(&mut instance, at_ms(2300.0));
    assert!(!actions
        .iter()
        .any(|a| matches!(a, Action::FalseTakeover { .. })));
    assert_eq!(instance.detection().unwrap().false_takeovers, 0);
}

#[test]
fn auto_mode_learns_the_gaps_before_it_arms() {
    let params = Params {
        fast_detect: Some(FastDetect {
            interval: ms(1),
            multiplier: Multiplier::Auto,
        }),
        ..fast_params()
    };
    let mut instance = Instance::new(params);
    instance.start(at_ms(0.0));
    drain(&mut instance);
    assert!(stream(&mut instance, 1, 2500, 250).is_empty());
    let learning = instance.detection().unwrap();
    assert!(!learning.armed, "{learning:?}");
    assert_eq!(learning.basis, Some(wimark_ha::vrrp::WindowBasis::Learning));
    assert!(stream(&mut instance, 2501, 3600, 250).is_empty());
    let armed = instance.detection().unwrap();
    assert!(armed.armed, "{armed:?}");
    let window = armed.window.unwrap();
    assert!(window >= ms(3) && window < ms(5), "{window:?}");
    assert_eq!(instance.poll_timeout(), Some(at_ms(3600.0) + window));
}

#[test]
fn the_fast_stream_is_a_standing_order_renewed_and_stopped_before_a_resignation() {
    let mut instance = Instance::new(fast_params());
    instance.start(at_ms(0.0));
    drain(&mut instance);
    let actions = run_until(&mut instance, at_ms(100.0));
    let order = |until: f64| {
        Action::Heartbeat(Heartbeat::Send {
            advert: advert(&fast_params(), 200, ms(10)),
            every: ms(1),
            until: at_ms(until),
        })
    };
    // Master_Down_Interval of a 200: 30 ms + 56/256 x 10 ms.
    let took_over = Timestamp(32_187_500);
    assert!(
        actions.contains(&Action::Heartbeat(Heartbeat::Send {
            advert: advert(&fast_params(), 200, ms(10)),
            every: ms(1),
            until: took_over + ms(30),
        })),
        "{actions:?}"
    );
    // The Adver_Timer renews the lease every Advertisement_Interval.
    let next = instance.poll_timeout().unwrap();
    assert_eq!(next, took_over + ms(70));
    instance.handle_timeout(next);
    let renewal = drain(&mut instance);
    assert_eq!(renewal, vec![order(next.0 as f64 / 1e6 + 30.0)]);
    // A resignation is the last advert: the stream stops before it.
    instance.resign(next);
    let actions = drain(&mut instance);
    assert_eq!(actions[0], Action::Heartbeat(Heartbeat::Stop));
    assert_eq!(actions[1], sends(0));
}

#[test]
fn a_resignation_right_after_a_late_turn_still_uses_the_fast_skew() {
    // With the stream sent in turns from several CPUs, one sender's stall
    // leaves a gap of two or three intervals that disarms the fast rule
    // for an advert; a resignation just then is still a fast master's
    // (a planned switchover took 6.4 ms once in the bench: the RFC skew).
    let params = fast_params();
    let mut instance = Instance::new(params.clone());
    instance.start(at_ms(0.0));
    drain(&mut instance);
    stream(&mut instance, 1, 2100, 250);
    // A 2.5 ms gap, then the resignation.
    instance
        .handle_advert(at_ms(2102.5), ip(PEER_HIGH), &advert(&params, 250, ms(10)), at_ms(2102.5))
        .expect("ok");
    instance
        .handle_advert(at_ms(2102.6), ip(PEER_HIGH), &advert(&params, 0, ms(10)), at_ms(2102.6))
        .expect("ok");
    assert_eq!(
        instance.poll_timeout(),
        Some(at_ms(2102.6) + Duration::from_nanos(218_750))
    );
}

#[test]
fn one_late_advert_does_not_disarm_the_fast_rule() {
    // Turns on several CPUs: one sender's missed turn leaves a gap of two
    // or three intervals. The rule stays armed from the next advert on —
    // falling back to the RFC timer there let a keepalived backup below us
    // win the race in the three-node lab.
    let params = fast_params();
    let mut instance = Instance::new(params.clone());
    instance.start(at_ms(0.0));
    drain(&mut instance);
    stream(&mut instance, 1, 2100, 250);
    instance
        .handle_advert(at_ms(2102.5), ip(PEER_HIGH), &advert(&params, 250, ms(10)), at_ms(2102.5))
        .expect("ok");
    assert_eq!(instance.poll_timeout(), Some(at_ms(2105.5)));
}

// ===== wimark-ha: trackers (keepalived's track_* semantics) =====

#[test]
fn a_tracker_lowering_the_masters_priority_goes_out_at_once_and_stays_out() {
    let params = v3(200, 10);
    let mut instance = master(params.clone());
    instance.set_tracking(at_ms(105.0), 150, false);
    assert_eq!(drain(&mut instance), vec![sends(150)], "at once, not at the next Adver_Timer");
    assert_eq!(instance.priority(), 150);
    let actions = run_until(&mut instance, at_ms(125.0));
    assert!(!actions.is_empty() && actions.iter().all(|a| *a == sends(150)), "{actions:?}");
    // The same verdict again sends nothing.
    instance.set_tracking(at_ms(126.0), 150, false);
    assert!(drain(&mut instance).is_empty());
    // The fast stream carries it too: its standing order is renewed.
    let mut fast = master(fast_params());
    fast.set_tracking(at_ms(105.0), 120, false);
    let actions = drain(&mut fast);
    assert_eq!(actions[0], sends(120));
    assert!(
        matches!(&actions[1], Action::Heartbeat(Heartbeat::Send { advert, .. }) if advert.priority == 120),
        "{actions:?}"
    );
}

#[test]
fn the_address_owner_keeps_255_whatever_the_trackers_say() {
    let mut owner = Instance::new(v3(255, 10));
    owner.set_tracking(at_ms(0.0), 100, false);
    assert_eq!(owner.priority(), 255);
    // And no other priority leaves 1..=254.
    let mut low = Instance::new(v3(20, 10));
    low.set_tracking(at_ms(0.0), 0, false);
    assert_eq!(low.priority(), 1);
}

/// A backup at `priority` following PEER_HIGH's fast stream at 200 for
/// past the warm-up.
fn following_a_fast_master(priority: u8) -> Instance {
    let mut instance = Instance::new(Params {
        priority,
        ..fast_params()
    });
    instance.start(at_ms(0.0));
    drain(&mut instance);
    assert!(stream(&mut instance, 1, 2100, 200).is_empty());
    instance
}

#[test]
fn a_backup_above_its_lowered_fast_master_preempts_at_once_and_it_is_no_false_takeover() {
    let mut instance = following_a_fast_master(100);
    let params = instance.params().clone();
    // The master's tracker failed: its adverts now say 50 (RFC 5798 §6.4.2:
    // discarded by a preempting backup).
    let t = at_ms(2101.0);
    assert_eq!(
        instance.handle_advert(t, ip(PEER_HIGH), &advert(&params, 50, ms(10)), t),
        Err(Ignored::LowerPriority)
    );
    // One named peer: no other backup competes, so no skew to wait.
    let actions = run_until(&mut instance, t);
    assert_eq!(
        transitions(&actions),
        vec![(State::Backup, State::Master, Reason::Preempting)]
    );
    assert!(
        actions.iter().any(|a| matches!(a, Action::Transition { silence: None, .. })),
        "a preemption ends no silence: {actions:?}"
    );
    // The old master speaks again (it has not heard us yet): expected, and
    // not a false takeover.
    let t = at_ms(2102.0);
    assert_eq!(
        instance.handle_advert(t, ip(PEER_HIGH), &advert(&params, 50, ms(10)), t),
        Err(Ignored::LowerPriority)
    );
    assert!(
        !drain(&mut instance).iter().any(|a| matches!(a, Action::FalseTakeover { .. })),
        "no false takeover"
    );
}

#[test]
fn with_other_backups_possible_the_preemption_waits_the_fast_rule_skew() {
    let mut instance = Instance::new(Params {
        priority: 100,
        sole_peer: false,
        ..fast_params()
    });
    instance.start(at_ms(0.0));
    drain(&mut instance);
    assert!(stream(&mut instance, 1, 2100, 200).is_empty());
    let params = instance.params().clone();
    let t = at_ms(2101.0);
    let _ = instance.handle_advert(t, ip(PEER_HIGH), &advert(&params, 50, ms(10)), t);
    // (256 - 100) / 256 of FAST_SKEW_SPAN_MIN (20 ms): 12.19 ms.
    let skew = instance.fast_rule_skew(Duration::ZERO);
    assert_eq!(skew, Duration::from_nanos(20_000_000 * 156 / 256));
    assert!(run_until(&mut instance, t + (skew - Duration::from_micros(1))).is_empty());
    assert_eq!(
        transitions(&run_until(&mut instance, t + skew)),
        vec![(State::Backup, State::Master, Reason::Preempting)]
    );
}

#[test]
fn at_rfc_rates_the_preemption_waits_master_down_interval() {
    let params = v3(100, 10);
    let mut instance = Instance::new(params.clone());
    instance.start(at_ms(0.0));
    drain(&mut instance);
    let t = at_ms(10.0);
    instance
        .handle_advert(t, ip(PEER_HIGH), &advert(&params, 200, ms(10)), t)
        .expect("followed");
    let t2 = at_ms(20.0);
    assert_eq!(
        instance.handle_advert(t2, ip(PEER_HIGH), &advert(&params, 50, ms(10)), t2),
        Err(Ignored::LowerPriority)
    );
    let down = t + instance.master_down_interval();
    let just_before = t + (instance.master_down_interval() - Duration::from_micros(1));
    assert!(run_until(&mut instance, just_before).is_empty());
    assert_eq!(
        transitions(&run_until(&mut instance, down)),
        vec![(State::Backup, State::Master, Reason::Preempting)]
    );
}

#[test]
fn a_tracker_fault_is_fault_until_every_cause_is_gone() {
    let params = v3(200, 10);
    let mut instance = master(params.clone());
    instance.set_tracking(at_ms(500.0), 200, true);
    let actions = drain(&mut instance);
    // Resigned (priority 0): the backup takes over after its skew time.
    assert_eq!(actions[..2], [sends(0), Action::RemoveVirtualIps]);
    assert_eq!(
        transitions(&actions),
        vec![(State::Master, State::Fault, Reason::TrackerFault)]
    );
    assert_eq!(instance.poll_timeout(), None);
    // The link goes too, and the tracker heals first: still FAULT.
    instance.interface_down(at_ms(510.0));
    instance.set_tracking(at_ms(520.0), 200, false);
    assert!(drain(&mut instance).is_empty());
    assert_eq!(instance.state(), State::Fault);
    instance.interface_up(at_ms(530.0));
    assert_eq!(
        transitions(&drain(&mut instance)),
        vec![(State::Fault, State::Backup, Reason::InterfaceUp)]
    );
    // The other order: link back first, tracker last.
    instance.set_tracking(at_ms(600.0), 200, true);
    instance.interface_down(at_ms(610.0));
    instance.interface_up(at_ms(620.0));
    drain(&mut instance);
    assert_eq!(instance.state(), State::Fault);
    instance.set_tracking(at_ms(630.0), 200, false);
    assert_eq!(
        transitions(&drain(&mut instance)),
        vec![(State::Fault, State::Backup, Reason::TrackerRecovered)]
    );
}

#[test]
fn a_tracker_fault_known_before_the_start_starts_in_fault() {
    let mut instance = Instance::new(v3(200, 10));
    instance.set_tracking(at_ms(0.0), 200, true);
    assert!(drain(&mut instance).is_empty(), "nothing before the start");
    instance.start(at_ms(0.0));
    assert_eq!(
        transitions(&drain(&mut instance)),
        vec![(State::Initialize, State::Fault, Reason::TrackerFault)]
    );
    assert_eq!(instance.poll_timeout(), None);
}

#[test]
fn witness_isolation_gives_the_vips_up_until_it_ends_and_then_starts_over() {
    // wimark-ha's witness, `on_isolation = "release_vip"`: an isolated
    // master gives its VIPs up (resigning first, as for any FAULT) and
    // stays deaf until the switcher ends the isolation.
    let params = v3(200, 10);
    let mut instance = master(params.clone());
    instance.set_witness_isolated(at_ms(500.0), true);
    let actions = drain(&mut instance);
    assert_eq!(actions[..2], [sends(0), Action::RemoveVirtualIps]);
    assert_eq!(
        transitions(&actions),
        vec![(State::Master, State::Fault, Reason::WitnessIsolated)]
    );
    assert_eq!(instance.poll_timeout(), None, "nothing timed while isolated");
    assert!(instance.own_fault(), "a sync group follows it into FAULT");
    // Said twice: nothing more.
    instance.set_witness_isolated(at_ms(505.0), true);
    assert!(drain(&mut instance).is_empty());
    // The link flaps meanwhile: still FAULT while the isolation stands.
    instance.interface_down(at_ms(510.0));
    instance.interface_up(at_ms(520.0));
    assert!(drain(&mut instance).is_empty());
    assert_eq!(instance.state(), State::Fault);
    // Adverts of the peer, now master, are not heard in FAULT.
    let t = at_ms(530.0);
    instance
        .handle_advert(t, ip(PEER_LOW), &advert(&params, 100, ms(10)), t)
        .expect("ignored quietly");
    assert!(drain(&mut instance).is_empty());
    // Over: as at startup, BACKUP with the full Master_Down_Interval, so
    // the peer that took over keeps the VIPs if it speaks.
    instance.set_witness_isolated(at_ms(600.0), false);
    assert_eq!(
        transitions(&drain(&mut instance)),
        vec![(State::Fault, State::Backup, Reason::WitnessRegained)]
    );
    assert_eq!(
        instance.poll_timeout(),
        Some(at_ms(600.0) + instance.master_down_interval())
    );
    // A backup isolated (the rule only isolates masters, but the machine
    // does not rely on it) gives up nothing it does not hold.
    instance.set_witness_isolated(at_ms(700.0), true);
    let actions = drain(&mut instance);
    assert!(!actions.contains(&Action::RemoveVirtualIps), "{actions:?}");
    assert!(!actions.contains(&sends(0)), "{actions:?}");
    assert_eq!(instance.state(), State::Fault);
}

// ===== Sync groups (keepalived's vrrp_sync_group) =====

/// Two members of one group (VRIDs 67 and 68), both backup of a live
/// priority-250 master.
fn sync_pair() -> (Instance, Instance) {
    let mut members = [67u8, 68].map(|vrid| {
        let mut instance = Instance::new(Params { vrid, ..v3(100, 10) });
        instance.join_sync_group();
        instance.start(at_ms(0.0));
        drain(&mut instance);
        instance
    });
    for member in &mut members {
        let params = Params { vrid: member_vrid(member), ..v3(100, 10) };
        member
            .handle_advert(at_ms(1.0), ip(PEER_HIGH), &advert(&params, 250, ms(10)), at_ms(1.0))
            .expect("ok");
    }
    let [one, two] = members;
    (one, two)
}

fn member_vrid(instance: &Instance) -> u8 {
    instance.params().vrid
}

#[test]
fn a_sync_group_takes_over_only_when_every_member_would() {
    let (mut one, mut two) = sync_pair();
    // The master falls silent on VRID 67 only: member one decides a
    // takeover and holds it; two still hears its master.
    let actions = run_until(&mut one, at_ms(100.0));
    assert!(actions.is_empty(), "held: no advert, no VIP: {actions:?}");
    assert!(one.wants_master() && !two.wants_master());
    assert_eq!(one.state(), State::Backup);
    // The engine keeps the gate closed while two does not want it.
    one.set_sync_gate(at_ms(100.0), false);
    assert!(drain(&mut one).is_empty());
    // Two's master falls silent too: both want; the gate opens and both
    // take over, each for its own reason.
    let actions = run_until(&mut two, at_ms(200.0));
    assert!(actions.is_empty());
    assert!(two.wants_master());
    for member in [&mut one, &mut two] {
        member.set_sync_gate(at_ms(200.0), true);
        assert_eq!(
            transitions(&drain(member)),
            vec![(State::Backup, State::Master, Reason::MasterDown)]
        );
    }
}

#[test]
fn a_held_takeover_is_dropped_when_the_master_speaks_again() {
    let (mut one, _two) = sync_pair();
    run_until(&mut one, at_ms(100.0));
    assert!(one.wants_master());
    let params = Params { vrid: 67, ..v3(100, 10) };
    one.handle_advert(at_ms(101.0), ip(PEER_HIGH), &advert(&params, 250, ms(10)), at_ms(101.0))
        .expect("ok");
    assert!(!one.wants_master(), "its master is back");
    one.set_sync_gate(at_ms(102.0), true);
    assert!(transitions(&drain(&mut one)).is_empty());
    assert_eq!(one.state(), State::Backup);
}

#[test]
fn a_member_leaving_master_takes_the_group_to_backup_and_fault_to_fault() {
    let (mut one, mut two) = sync_pair();
    for member in [&mut one, &mut two] {
        member.set_sync_gate(at_ms(0.0), true);
        run_until(member, at_ms(100.0));
        assert_eq!(member.state(), State::Master);
    }
    // One is preempted: the engine moves two to BACKUP; it resigns.
    two.sync_backup(at_ms(150.0));
    let actions = drain(&mut two);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::SendAdvert(ad) if ad.priority == 0 && ad.vrid == 68)),
        "a resignation: {actions:?}"
    );
    assert_eq!(
        transitions(&actions),
        vec![(State::Master, State::Backup, Reason::SyncGroup)]
    );
    // One member's own FAULT holds the other in FAULT, and lets it go.
    one.interface_down(at_ms(200.0));
    assert!(one.own_fault());
    two.set_group_fault(at_ms(200.0), true);
    assert_eq!(two.state(), State::Fault);
    assert!(!two.own_fault(), "in FAULT for the group, not for itself");
    two.set_group_fault(at_ms(300.0), false);
    assert_eq!(
        transitions(&drain(&mut two)).last(),
        Some(&(State::Fault, State::Backup, Reason::SyncGroup))
    );
}

// ===== VIPs the kernel reports gone or added (RFC 5798 §6.4.3: the master
// answers for its VIPs) =====

#[test]
fn a_master_puts_back_a_vip_someone_removed_and_nothing_else() {
    let mut instance = master(v3(200, 10));
    let now = at_ms(200.0);
    instance.vip_removed(now, ip("10.10.10.3"));
    assert_eq!(
        drain(&mut instance),
        [Action::RestoreVirtualIp(ip("10.10.10.3"))]
    );
    // Not one of ours: none of our business.
    instance.vip_removed(now, ip("10.10.10.4"));
    instance.vip_appeared(now, ip("10.10.10.3"));
    assert_eq!(drain(&mut instance), []);
    assert_eq!(instance.state(), State::Master);
}

#[test]
fn a_backup_removes_a_vip_someone_added_and_ignores_its_removal() {
    let mut instance = Instance::new(v3(100, 10));
    instance.start(at_ms(0.0));
    drain(&mut instance);
    assert_eq!(instance.state(), State::Backup);
    instance.vip_appeared(at_ms(1.0), ip("10.10.10.3"));
    assert_eq!(
        drain(&mut instance),
        [Action::RemoveStrayVirtualIp(ip("10.10.10.3"))]
    );
    instance.vip_removed(at_ms(2.0), ip("10.10.10.3"));
    assert_eq!(drain(&mut instance), []);
}

#[test]
fn the_address_owner_neither_restores_nor_removes_its_own_addresses() {
    let mut owner = Instance::new(v3(255, 10));
    owner.start(at_ms(0.0));
    drain(&mut owner);
    assert_eq!(owner.state(), State::Master);
    owner.vip_removed(at_ms(1.0), ip("10.10.10.3"));
    owner.vip_appeared(at_ms(1.0), ip("10.10.10.3"));
    assert_eq!(drain(&mut owner), []);
}

#[test]
fn a_master_that_hands_over_keeps_its_vips_until_the_new_master_speaks() {
    let mut instance = master(v3(200, 10));
    instance.resign(at_ms(200.0));
    drain(&mut instance);
    assert_eq!(instance.state(), State::Backup);
    assert!(instance.holds_vips());
    instance.vip_removed(at_ms(201.0), ip("10.10.10.3"));
    assert_eq!(
        drain(&mut instance),
        [Action::RestoreVirtualIp(ip("10.10.10.3"))]
    );
}

#[test]
fn a_vip_that_cannot_be_added_resigns_into_fault_and_starts_over_later() {
    let mut instance = master(v3(200, 10));
    let failed_at = at_ms(200.0);
    instance.vip_add_failed(failed_at, ip("10.10.10.3"));
    let actions = drain(&mut instance);
    // RFC 5798 §6.4.3 leaving Master: the resignation before the VIPs go.
    assert_eq!(actions[0], sends(0), "{actions:?}");
    assert!(actions.contains(&Action::RemoveVirtualIps), "{actions:?}");
    assert_eq!(
        transitions(&actions),
        [(State::Master, State::Fault, Reason::VipNotAdded)]
    );
    assert!(!instance.holds_vips());
    // Deaf and silent in FAULT until the hold passes; then BACKUP (§6.4.1).
    assert_eq!(instance.poll_timeout(), Some(failed_at + VIP_FAULT_HOLD));
    let actions = run_until(&mut instance, failed_at + VIP_FAULT_HOLD);
    assert_eq!(
        transitions(&actions),
        [(State::Fault, State::Backup, Reason::VipRetry)]
    );
    // A failure reported for a router that does not hold the VIP changes nothing.
    instance.vip_add_failed(at_ms(1300.0), ip("10.10.10.3"));
    assert_eq!(drain(&mut instance), []);
    assert_eq!(instance.state(), State::Backup);
}

#[test]
fn a_master_whose_advert_source_address_goes_resigns_into_fault_until_it_is_back() {
    let mut instance = master(v3(200, 10));
    instance.source_address_present(at_ms(200.0), false);
    let actions = drain(&mut instance);
    assert_eq!(actions[0], sends(0), "{actions:?}");
    assert!(actions.contains(&Action::RemoveVirtualIps), "{actions:?}");
    assert_eq!(
        transitions(&actions),
        [(State::Master, State::Fault, Reason::SourceAddressGone)]
    );
    // Said twice, changes nothing; back: BACKUP (RFC 5798 §6.4.1).
    instance.source_address_present(at_ms(201.0), false);
    assert_eq!(drain(&mut instance), []);
    instance.source_address_present(at_ms(300.0), true);
    assert_eq!(
        transitions(&drain(&mut instance)),
        [(State::Fault, State::Backup, Reason::SourceAddressBack)]
    );
}
