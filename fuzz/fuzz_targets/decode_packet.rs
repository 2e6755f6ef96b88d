//! The packet decoder the kernel and the daemon share: whole frames through
//! the classifier, and VRRP messages through the daemon's decoder with the
//! first bytes choosing addresses and TTL. No input may panic, and anything
//! accepted with a usable interval (the state machine ignores a zero one)
//! must encode back to a message the decoder accepts again.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use wimark_ha::vrrp::{Advert, ChecksumMode};
use wimark_ha_common::classify::classify;

fuzz_target!(|data: &[u8]| {
    let _ = classify(data);
    if data.len() < 2 {
        return;
    }
    let (ttl, v6, message) = (data[0], data[1] & 1 == 1, &data[2..]);
    let (source, destination) = if v6 {
        (
            IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
            IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12)),
        )
    } else {
        (
            IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18)),
        )
    };
    if let Ok(advert) = Advert::decode(message, source, destination, ttl)
        .map_err(|_| ())
        .and_then(|a| if a.interval.is_zero() { Err(()) } else { Ok(a) })
    {
        let encoded = advert
            .encode(source, destination, ChecksumMode::WithPseudoHeader)
            .expect("a decoded advert encodes");
        Advert::decode(&encoded, source, destination, 255).expect("and decodes again");
    }
});
