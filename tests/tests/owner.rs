//! The address owner (issue 14, item 6; RFC 5798 §5.2.4): priority 255 with
//! a VIP that is the interface's own address passed check-config, then
//! `run` exited ("no IPv4 address to send adverts from … the VIP does not
//! count"). The owner now sends from that address and never removes it, on
//! demotion or exit; a 255 whose VIP is not the interface's is refused at
//! start, saying why.

use std::time::Duration;

use wimark_ha::records::State;
use wimark_ha_tests::{
    daemon::{config, has_address, wait_until, Daemon},
    lab::two_servers,
};

/// A's own address (the lab gives A 10.77.0.1/24 on eth1) as the VIP.
const OWNED: &str = "version = 3\nadvert_interval = \"10ms\"\nvirtual_ips = [\"10.77.0.1/24\"]";

#[test]
fn the_owner_sends_from_its_address_and_never_removes_it() {
    let (_lab, a, b) = two_servers(true).expect("lab");
    let mut owner = Daemon::start(&a, "owner", |s| config(s, 255, OWNED)).expect("the owner starts");
    wait_until(Duration::from_secs(5), "the owner MASTER", || {
        owner.state() == Some(State::Master)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", owner.log()));
    let instance = owner.instance().expect("status");
    assert_eq!(instance.primary_address.to_string(), "10.77.0.1", "sends from its own address");
    assert!(instance.holds_virtual_ips);

    let backup = Daemon::start(&b, "backup", |s| config(s, 100, OWNED)).expect("B");
    wait_until(Duration::from_secs(5), "B BACKUP behind the owner", || {
        backup.state() == Some(State::Backup)
            && backup.instance().is_ok_and(|i| i.master.is_some_and(|m| m.to_string() == "10.77.0.1"))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", backup.log()));

    // The owner stops: it resigns, B takes over, and the owner's address
    // stays on its interface.
    owner.signal(libc::SIGTERM);
    assert_eq!(owner.wait(), Some(0), "{}", owner.log());
    assert!(has_address(&a, "eth1", "10.77.0.1"), "the owner's address was removed");
    wait_until(Duration::from_secs(2), "B MASTER", || backup.state() == Some(State::Master))
        .unwrap_or_else(|e| panic!("{e}\n{}", backup.log()));
}

#[test]
fn priority_255_with_a_vip_the_interface_does_not_own_is_refused_saying_why() {
    let (_lab, a, _b) = two_servers(true).expect("lab");
    let not_owned = OWNED.replace("10.77.0.1/24", "10.77.0.50/24");
    let error = match Daemon::start(&a, "not-owner", |s| config(s, 255, &not_owned)) {
        Ok(daemon) => panic!("started:\n{}", daemon.log()),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("priority 255 is the address owner's") && error.contains("10.77.0.50"),
        "{error}"
    );
    assert!(!has_address(&a, "eth1", "10.77.0.50"));
}
