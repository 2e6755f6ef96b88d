//! `cargo xtask lab`: a real failover in throwaway network namespaces.
//!
//! Two wimark-ha daemons (VRRPv3 10 ms, fast detection 1 ms x 3) on server A
//! and server B, an AP sending a 1 kHz UDP probe stream to the VIP, and a
//! capture on the bridge between them. Server A is lost (its link cut and its
//! daemon killed at the same instant, as a power loss would), and the
//! timeline is printed as the wire and the AP saw it. Everything is removed
//! at the end, whatever happens.

use anyhow::Result;
use wimark_ha_tests::{
    failover_lab::{FailoverLab, Failure, Pair, Timeline, VIP},
    require_root,
};

fn main() -> Result<()> {
    require_root("the lab");
    println!("lab: server A (10.77.0.1), server B (10.77.0.2) and an AP (10.77.0.101) behind a bridge, in network namespaces");
    println!("lab: wimark-ha on both servers: VRID 67, VIP {VIP}, VRRPv3 every 10 ms, fast detection 1 ms x 3; A has priority 200, B 100");
    let mut lab = FailoverLab::new(Pair::WimarkHaFast)?;
    for (name, state) in lab.states() {
        println!("lab: {name}: {state}");
    }
    println!("lab: the AP probes the VIP 1000 times a second; a capture watches the bridge");
    println!(
        "lab: now server A is lost: its link cut and its daemon SIGKILLed at the same instant\n"
    );
    let timeline = lab.fail(Failure::NodeLoss)?;
    print(&timeline);
    for (name, state) in lab.states() {
        println!("lab: {name}: {state}");
    }
    drop(lab);
    println!("lab: done; namespaces, daemons and XDP programs removed");
    Ok(())
}

fn print(t: &Timeline) {
    println!("  timeline (ms from the failure instant; wire events are kernel timestamps on the bridge):");
    let mut events = vec![(
        0.0,
        "failure: A's link cut (the `ip` command takes ~2 ms) and its daemon killed".to_string(),
    )];
    let wire = [
        (
            t.last_old_advert_ms,
            "last advert from server A on the wire".to_string(),
        ),
        (
            t.first_new_garp_ms,
            format!("first gratuitous ARP for {VIP} from server B"),
        ),
        (
            t.first_new_advert_ms,
            "first advert from server B as master".to_string(),
        ),
    ];
    for (at, what) in wire {
        match at {
            Some(ms) => events.push((ms, what)),
            None => println!("  (not seen) {what}"),
        }
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (ms, what) in events {
        println!("  {ms:>+9.3} ms  {what}");
    }
    if let Some(takeover) = t.takeover_ms {
        println!("\n  takeover, last advert of A to B's first gratuitous ARP: {takeover:.3} ms");
    }
    if let Some(r) = &t.reported {
        let ms = |v: Option<u64>| {
            v.map_or("-".to_string(), |us| {
                format!("{:.3} ms", us as f64 / 1000.0)
            })
        };
        println!(
            "  server B's own account: {} -> {} ({}), silence {}, VIP added {} and gratuitous ARP sent {} after deciding",
            r.from, r.to, r.reason, ms(r.silence_us), ms(r.vip_added_us), ms(r.garp_sent_us)
        );
    }
    println!(
        "  the AP's view: longest gap in the 1 kHz probe replies {:.1} ms, {} probes lost\n",
        t.probe_gap_ms, t.probes_lost
    );
}
