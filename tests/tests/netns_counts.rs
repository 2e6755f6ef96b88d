//! The monitor attached for real: server A sends exact numbers of every kind
//! of frame over a veth into server B, where the XDP program counts them. The
//! counts must be exact, the peer and AP tables right, and nothing may be left
//! on the interface after the monitor goes.

use std::{
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use wimark_ha::monitor::{attached_xdp_program, Monitor, MonitorError, MonitorOptions, Snapshot};
use wimark_ha_common::abi::Counter;
use wimark_ha_tests::{
    frames::{catalogue, AP_1, AP_2, AP_6, SERVER_A, SERVER_A6},
    lab::{self, enter_netns, in_netns, netns_path, Lab},
    sockets::PacketSocket,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Two namespaces joined by a veth (`eth1` on both sides).
fn two_servers() -> (Lab, String, String) {
    lab::two_servers(false).expect("two-server lab")
}

fn counter_total(snapshot: &Snapshot, counter: Counter) -> u64 {
    match counter {
        Counter::VrrpValid => snapshot.vrrp.valid,
        Counter::VrrpInvalidTtl => snapshot.vrrp.invalid.ttl,
        Counter::VrrpInvalidVersion => snapshot.vrrp.invalid.version,
        Counter::VrrpInvalidType => snapshot.vrrp.invalid.r#type,
        Counter::VrrpInvalidLength => snapshot.vrrp.invalid.length,
        Counter::VrrpInvalidChecksum => snapshot.vrrp.invalid.checksum,
        Counter::Carp => snapshot.carp.packets,
        Counter::Ike => snapshot.ap.ike.packets,
        Counter::NatT => snapshot.ap.nat_t.packets,
        Counter::Esp => snapshot.ap.esp.packets,
        Counter::Mqtt => snapshot.ap.mqtt.packets,
        Counter::MqttTls => snapshot.ap.mqtt_tls.packets,
        Counter::Other => snapshot.other.packets,
        Counter::AdvertEventsLost => snapshot.advert_events_lost,
        Counter::PeerEventsLost => snapshot.peer_events_lost,
        Counter::ApEvicted => snapshot.ap.evicted,
        Counter::VrrpRogue => snapshot.vrrp.rogue,
        Counter::VrrpTagged => snapshot.vrrp.tagged,
        Counter::VrrpInvalidAddressCount => snapshot.vrrp.invalid.address_count,
        Counter::VrrpInvalidFragment => snapshot.vrrp.invalid.fragment,
    }
}

#[test]
fn exact_counts_of_every_kind_over_a_veth() {
    let (_lab, a, b) = two_servers();
    let cases = catalogue();
    // Case i is sent i + 1 times, so a frame counted under the wrong class
    // cannot hide behind an equal count.
    let mut expected = [0u64; Counter::COUNT as usize];
    let mut expected_bytes = [0u64; Counter::COUNT as usize];
    let mut total = 0u64;
    for (i, case) in cases.iter().enumerate() {
        expected[case.expected as usize] += i as u64 + 1;
        expected_bytes[case.expected as usize] += (i as u64 + 1) * case.frame.len() as u64;
        total += i as u64 + 1;
    }

    let (ready_tx, ready_rx) = mpsc::channel();
    let (sent_tx, sent_rx) = mpsc::channel::<()>();
    let b_path = netns_path(&b);
    let watcher = thread::spawn(move || -> Result<(Snapshot, Option<u32>), String> {
        enter_netns(&b_path).map_err(|e| e.to_string())?;
        let rt = runtime();
        let monitor = rt
            .block_on(Monitor::attach("eth1", MonitorOptions::default()))
            .map_err(|e| e.to_string())?;
        ready_tx.send(()).map_err(|e| e.to_string())?;
        sent_rx.recv().map_err(|e| e.to_string())?;
        // veth hands frames to the peer's NAPI: wait until all arrived, then
        // a little longer so an over-count would show.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let snapshot = monitor.snapshot().map_err(|e| e.to_string())?;
            let seen: u64 = Counter::ALL
                .iter()
                .map(|c| counter_total(&snapshot, *c))
                .sum();
            if seen >= total || Instant::now() > deadline {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        thread::sleep(Duration::from_millis(200));
        let snapshot = monitor.snapshot().map_err(|e| e.to_string())?;
        drop(monitor);
        let left = rt
            .block_on(attached_xdp_program("eth1"))
            .map_err(|e| e.to_string())?;
        Ok((snapshot, left.map(|p| p.id)))
    });
    ready_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("monitor attached in B");

    let frames: Vec<(Vec<u8>, usize)> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| (c.frame.clone(), i + 1))
        .collect();
    in_netns(&a, move || -> anyhow::Result<()> {
        let socket = PacketSocket::bind("eth1", false)?;
        for (frame, times) in &frames {
            for _ in 0..*times {
                socket.send(frame)?;
            }
        }
        Ok(())
    })
    .expect("netns a")
    .expect("sending from A");
    sent_tx.send(()).expect("watcher alive");

    let (snapshot, left_behind) = watcher
        .join()
        .expect("watcher thread")
        .expect("monitor in B");
    for counter in Counter::ALL {
        assert_eq!(
            counter_total(&snapshot, counter),
            expected[counter as usize],
            "packets counted as {counter:?}"
        );
    }
    assert_eq!(snapshot.ap.ike.bytes, expected_bytes[Counter::Ike as usize]);
    assert_eq!(
        snapshot.ap.mqtt.bytes,
        expected_bytes[Counter::Mqtt as usize]
    );
    assert_eq!(
        snapshot.other.bytes,
        expected_bytes[Counter::Other as usize]
    );

    // Peers: every valid advert came from A (IPv4) or A's link-local (IPv6), VRID 67.
    let valid_from = |source: std::net::IpAddr| -> u64 {
        cases
            .iter()
            .enumerate()
            .filter(|(_, c)| c.expected == Counter::VrrpValid)
            .filter(|(_, c)| match classify_source(&c.frame) {
                Some(s) => s == source,
                None => false,
            })
            .map(|(i, _)| i as u64 + 1)
            .sum()
    };
    let peer = |source: std::net::IpAddr| {
        snapshot
            .vrrp
            .peers
            .iter()
            .find(|p| p.source == source && p.vrid == 67)
            .cloned()
    };
    let a4 = peer(SERVER_A.into()).expect("peer A over IPv4");
    assert_eq!(a4.adverts, valid_from(SERVER_A.into()));
    assert!(a4.last_seen_ms_ago < 5000);
    let a6 = peer(SERVER_A6.into()).expect("peer A over IPv6");
    assert_eq!(a6.adverts, valid_from(SERVER_A6.into()));
    assert_eq!(snapshot.vrrp.peers.len(), 2, "{:?}", snapshot.vrrp.peers);

    // APs: two IPv4 APs (one seen only as a destination) and one IPv6 AP.
    assert_eq!(
        snapshot.ap.active_aps, 3,
        "AP_1 {AP_1}, AP_2 {AP_2}, AP_6 {AP_6}"
    );
    assert_eq!(
        left_behind, None,
        "XDP program left on eth1 after the monitor was dropped"
    );
}

fn classify_source(frame: &[u8]) -> Option<std::net::IpAddr> {
    match wimark_ha_common::classify::classify(frame) {
        wimark_ha_common::classify::Verdict::Vrrp(advert) => {
            Some(std::net::IpAddr::from(advert.source))
        }
        _ => None,
    }
}

#[test]
fn a_second_monitor_is_refused_naming_the_first() {
    let (_lab, _a, b) = two_servers();
    let message = in_netns(&b, || {
        let rt = runtime();
        let first = rt
            .block_on(Monitor::attach("eth1", MonitorOptions::default()))
            .map_err(|e| e.to_string())?;
        let second = rt.block_on(Monitor::attach("eth1", MonitorOptions::default()));
        let message = match second {
            Err(error @ MonitorError::AlreadyAttached { .. }) => error.to_string(),
            Err(other) => return Err(format!("wrong error: {other}")),
            Ok(_) => return Err("second attach succeeded".to_string()),
        };
        drop(first);
        // Once the first is gone, attaching works again.
        let third = rt
            .block_on(Monitor::attach("eth1", MonitorOptions::default()))
            .map_err(|e| e.to_string())?;
        drop(third);
        Ok::<_, String>(message)
    })
    .expect("netns b")
    .expect("attach sequence");
    assert!(
        message.contains("already has an XDP program attached"),
        "{message}"
    );
    assert!(
        message.contains("wimark_ha_monit"),
        "names the program: {message}"
    );
    assert!(message.contains("--force"), "says what to do: {message}");
}

#[test]
fn force_replaces_a_program_attached_through_netlink() {
    let (_lab, _a, b) = two_servers();
    let outcome = in_netns(&b, || -> Result<(u32, u32, Option<u32>), String> {
        // A foreign program attached the legacy way (netlink, no bpf_link),
        // as `ip link set dev eth1 xdp obj ...` would.
        let mut foreign = wimark_ha::monitor::load(None).map_err(|e| e.to_string())?;
        let program: &mut aya::programs::Xdp = foreign
            .program_mut(wimark_ha_common::abi::PROGRAM_NAME)
            .ok_or("no program")?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| e.to_string())?;
        let rt = runtime();
        rt.block_on(attach_through_netlink("eth1", program))
            .map_err(|e| e.to_string())?;
        drop(foreign); // the netlink attachment keeps the program alive
        let foreign_id = rt
            .block_on(attached_xdp_program("eth1"))
            .map_err(|e| e.to_string())?
            .ok_or("foreign not attached")?
            .id;
        let forced = rt
            .block_on(Monitor::attach(
                "eth1",
                MonitorOptions {
                    force: true,
                    kernel_log: None,
                    max_aps: None,
                },
            ))
            .map_err(|e| e.to_string())?;
        let ours = rt
            .block_on(attached_xdp_program("eth1"))
            .map_err(|e| e.to_string())?
            .ok_or("ours not attached")?
            .id;
        drop(forced);
        let left = rt
            .block_on(attached_xdp_program("eth1"))
            .map_err(|e| e.to_string())?
            .map(|p| p.id);
        Ok((foreign_id, ours, left))
    })
    .expect("netns b");
    let (foreign_id, ours, left) = outcome.expect("force sequence");
    assert_ne!(
        foreign_id, ours,
        "--force must put our program in place of the foreign one"
    );
    assert_eq!(left, None);
}

/// Attaches `program` the legacy way (IFLA_XDP_FD over rtnetlink, generic
/// mode), which outlives the process that did it, like `ip link set ... xdp`.
async fn attach_through_netlink(
    interface: &str,
    program: &aya::programs::Xdp,
) -> anyhow::Result<()> {
    use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage, LinkXdp};
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let (connection, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(connection);
    let index = wimark_ha::vip::interface_index(interface)?;
    let mut message = LinkMessage::default();
    message.header.index = index;
    let fd = program.fd()?.as_fd().as_raw_fd();
    message.attributes.push(LinkAttribute::Xdp(vec![
        LinkXdp::Fd(fd),
        LinkXdp::Flags(1 << 1),
    ]));
    handle.link().set(message).execute().await?;
    Ok(())
}
