//! The VRRP advertisement codec, versions 2 (RFC 3768) and 3 (RFC 5798).
//!
//! Decoding runs the same receive checks as the XDP program
//! (`wimark_ha_common::classify::check_vrrp`), so the kernel and the daemon
//! can never disagree on what is valid; this module adds the parts the kernel
//! does not keep (the address list, the v2 authentication data).
//!
//! ```text
//! VRRPv3 (RFC 5798 §5.1)                  VRRPv2 (RFC 3768 §5.1)
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |(rsvd) |     Max Adver Int     |          Checksum             |  v3
//! |   Auth Type   |   Adver Int   |          Checksum             |  v2
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  IPvX Address(es) ...                         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Authentication Data (v2 only, 8 bytes)               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use std::{net::IpAddr, time::Duration};

use bytes::{BufMut, BytesMut};
use wimark_ha_common::{
    abi::IpBytes,
    classify::{
        check_vrrp, internet_checksum, IpContext, VrrpRejection, VRRP_HEADER_LEN, VRRP_MAX_LEN,
        VRRP_TYPE_ADVERTISEMENT, VRRP_V2_AUTH_LEN,
    },
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// RFC 3768: IPv4 only, whole-second intervals, optional simple password.
    V2,
    /// RFC 5798: IPv4 and IPv6, centisecond intervals, no authentication.
    V3,
}

impl Version {
    pub const fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

/// VRRPv2 authentication (RFC 3768 §5.3.6). v3 has none. Its Debug form
/// never shows the password (configs and params are debug-printed).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    /// Type 1: up to 8 bytes of clear-text password, zero padded.
    Password([u8; 8]),
    /// Any other type (2 was IP AH, removed by RFC 3768): kept so the daemon
    /// can count and refuse it.
    Unsupported(u8),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Password(_) => f.write_str("Password(<redacted>)"),
            Auth::Unsupported(kind) => write!(f, "Unsupported({kind})"),
        }
    }
}

impl Auth {
    /// keepalived's `auth_pass`: at most 8 bytes are used.
    pub fn password(text: &str) -> Self {
        let mut data = [0u8; 8];
        for (slot, byte) in data.iter_mut().zip(text.bytes()) {
            *slot = byte;
        }
        Auth::Password(data)
    }
}

/// Which IPv4 checksum a VRRPv3 advert carries. RFC 5798 §5.2.8 includes the
/// pseudo-header; several implementations omit it. Receivers accept both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumMode {
    WithPseudoHeader,
    WithoutPseudoHeader,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    pub version: Version,
    pub vrid: u8,
    pub priority: u8,
    /// v2: whole seconds, 1..=255; v3: multiples of 10 ms, 10 ms..=40950 ms.
    pub interval: Duration,
    pub auth: Auth,
    pub addresses: Vec<IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("VRRPv2 advert interval must be whole seconds from 1 to 255, not {0:?}")]
    V2Interval(Duration),
    #[error(
        "VRRPv3 advert interval must be a multiple of 10 ms from 10 ms to 40950 ms, not {0:?}"
    )]
    V3Interval(Duration),
    #[error("VRRPv2 carries IPv4 only")]
    V2OverIpv6,
    #[error("address {0} is not of the same family as the packet")]
    MixedFamily(IpAddr),
    #[error("{0} addresses do not fit in one advert")]
    TooManyAddresses(usize),
}

impl Advert {
    /// The VRRP message (no IP header) as sent from `source` to `destination`.
    pub fn encode(
        &self,
        source: IpAddr,
        destination: IpAddr,
        checksum: ChecksumMode,
    ) -> Result<BytesMut, EncodeError> {
        let ipv4 = source.is_ipv4();
        if let Some(odd) = self.addresses.iter().find(|a| a.is_ipv4() != ipv4) {
            return Err(EncodeError::MixedFamily(*odd));
        }
        let address_len = if ipv4 { 4 } else { 16 };
        let length = VRRP_HEADER_LEN
            + address_len * self.addresses.len()
            + if self.version == Version::V2 {
                VRRP_V2_AUTH_LEN
            } else {
                0
            };
        if self.addresses.len() > usize::from(u8::MAX) || length > VRRP_MAX_LEN {
            return Err(EncodeError::TooManyAddresses(self.addresses.len()));
        }
        let mut out = BytesMut::with_capacity(length);
        out.put_u8(self.version.number() << 4 | VRRP_TYPE_ADVERTISEMENT);
        out.put_u8(self.vrid);
        out.put_u8(self.priority);
        out.put_u8(self.addresses.len() as u8);
        match self.version {
            Version::V2 => {
                if !ipv4 {
                    return Err(EncodeError::V2OverIpv6);
                }
                let seconds = self.interval.as_secs();
                if self.interval.subsec_nanos() != 0 || !(1..=255).contains(&seconds) {
                    return Err(EncodeError::V2Interval(self.interval));
                }
                out.put_u8(match self.auth {
                    Auth::None => 0,
                    Auth::Password(_) => 1,
                    Auth::Unsupported(kind) => kind,
                });
                out.put_u8(seconds as u8);
            }
            Version::V3 => {
                let millis = self.interval.as_millis();
                if !self.interval.as_nanos().is_multiple_of(10_000_000)
                    || !(10..=40950).contains(&millis)
                {
                    return Err(EncodeError::V3Interval(self.interval));
                }
                out.put_u16((millis / 10) as u16);
            }
        }
        out.put_u16(0); // checksum, filled in below
        for address in &self.addresses {
            match address {
                IpAddr::V4(a) => out.put_slice(&a.octets()),
                IpAddr::V6(a) => out.put_slice(&a.octets()),
            }
        }
        if self.version == Version::V2 {
            out.put_slice(&match self.auth {
                Auth::None | Auth::Unsupported(_) => [0; 8],
                Auth::Password(data) => data,
            });
        }
        let ip = IpContext {
            source: IpBytes::from(source),
            destination: IpBytes::from(destination),
            ttl: 255,
        };
        // v2 never has a pseudo-header; v3 over IPv6 always has one.
        let pseudo = match (self.version, ipv4, checksum) {
            (Version::V2, _, _) => None,
            (Version::V3, false, _) => Some(&ip),
            (Version::V3, true, ChecksumMode::WithPseudoHeader) => Some(&ip),
            (Version::V3, true, ChecksumMode::WithoutPseudoHeader) => None,
        };
        let sum = internet_checksum(&out, pseudo);
        out[6..8].copy_from_slice(&sum.to_be_bytes());
        Ok(out)
    }

    /// Decodes a VRRP message received with `ttl` from `source` to
    /// `destination`, applying every receive check of RFC 5798 §7.1 that does
    /// not need configuration.
    pub fn decode(
        message: &[u8],
        source: IpAddr,
        destination: IpAddr,
        ttl: u8,
    ) -> Result<Advert, VrrpRejection> {
        let ip = IpContext {
            source: IpBytes::from(source),
            destination: IpBytes::from(destination),
            ttl,
        };
        let summary = check_vrrp(message, 0, message.len(), &ip)?;
        // check_vrrp verified the length against the count, so these slices exist.
        let count = usize::from(summary.address_count);
        let body = &message[VRRP_HEADER_LEN..];
        let addresses = if source.is_ipv4() {
            body.chunks_exact(4)
                .take(count)
                .map(|c| IpAddr::from([c[0], c[1], c[2], c[3]]))
                .collect()
        } else {
            body.chunks_exact(16)
                .take(count)
                .map(|c| {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(c);
                    IpAddr::from(octets)
                })
                .collect()
        };
        let (version, auth) = if summary.version == 2 {
            let data_at = VRRP_HEADER_LEN + 4 * count;
            let mut data = [0u8; 8];
            data.copy_from_slice(&message[data_at..data_at + VRRP_V2_AUTH_LEN]);
            let auth = match summary.auth_type {
                0 => Auth::None,
                1 => Auth::Password(data),
                other => Auth::Unsupported(other),
            };
            (Version::V2, auth)
        } else {
            (Version::V3, Auth::None)
        };
        Ok(Advert {
            version,
            vrid: summary.vrid,
            priority: summary.priority,
            interval: Duration::from_millis(u64::from(summary.interval_ms)),
            auth,
            addresses,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::vrrp::DecodeError;

    const GROUP4: IpAddr = IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18));
    const GROUP6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12));
    const A4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1));
    const A6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xa));

    fn vendor() -> Advert {
        Advert {
            version: Version::V2,
            vrid: 67,
            priority: 200,
            interval: Duration::from_secs(1),
            auth: Auth::password("wimark123"),
            addresses: vec![IpAddr::V4(Ipv4Addr::new(10, 10, 10, 3))],
        }
    }

    /// The vendor's advert, byte by byte (RFC 3768 §5.1 layout).
    #[test]
    fn vendor_v2_advert_encodes_to_known_bytes() {
        let bytes = vendor()
            .encode(A4, GROUP4, ChecksumMode::WithoutPseudoHeader)
            .expect("encode");
        let mut expected = vec![0x21, 67, 200, 1, 1, 1, 0, 0, 10, 10, 10, 3];
        expected.extend_from_slice(b"wimark12"); // auth_pass is cut to 8 bytes
        let sum = internet_checksum(&expected, None);
        expected[6..8].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(&bytes[..], &expected[..]);
    }

    #[test]
    fn round_trips_both_versions_and_families() {
        let v3_4 = Advert {
            version: Version::V3,
            vrid: 1,
            priority: 255,
            interval: Duration::from_millis(10),
            auth: Auth::None,
            addresses: vec![
                IpAddr::V4(Ipv4Addr::new(10, 10, 10, 3)),
                IpAddr::V4(Ipv4Addr::new(10, 10, 10, 4)),
            ],
        };
        let v3_6 = Advert {
            addresses: vec![IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3))],
            interval: Duration::from_millis(40950),
            ..v3_4.clone()
        };
        for (advert, source, group) in [
            (vendor(), A4, GROUP4),
            (v3_4.clone(), A4, GROUP4),
            (v3_6, A6, GROUP6),
        ] {
            for mode in [
                ChecksumMode::WithPseudoHeader,
                ChecksumMode::WithoutPseudoHeader,
            ] {
                if source.is_ipv6() && mode == ChecksumMode::WithoutPseudoHeader {
                    continue; // not a thing over IPv6
                }
                let bytes = advert.encode(source, group, mode).expect("encode");
                assert_eq!(
                    Advert::decode(&bytes, source, group, 255),
                    Ok(advert.clone()),
                    "{mode:?}"
                );
            }
        }
    }

    #[test]
    fn receive_checks_reject_with_typed_reasons() {
        let bytes = vendor()
            .encode(A4, GROUP4, ChecksumMode::WithoutPseudoHeader)
            .expect("encode");
        assert_eq!(
            Advert::decode(&bytes, A4, GROUP4, 254),
            Err(VrrpRejection::Invalid(DecodeError::Ttl))
        );
        assert_eq!(
            Advert::decode(&bytes[..bytes.len() - 1], A4, GROUP4, 255),
            Err(VrrpRejection::Invalid(DecodeError::Length))
        );
        let mut corrupt = bytes.to_vec();
        corrupt[2] = 100;
        assert_eq!(
            Advert::decode(&corrupt, A4, GROUP4, 255),
            Err(VrrpRejection::Invalid(DecodeError::Checksum))
        );
        // The same bytes from another source: v2 has no pseudo-header, still fine.
        let other = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 9));
        assert!(Advert::decode(&bytes, other, GROUP4, 255).is_ok());
    }

    #[test]
    fn encode_refuses_what_the_wire_cannot_carry() {
        let mut advert = vendor();
        advert.interval = Duration::from_millis(1500);
        assert_eq!(
            advert.encode(A4, GROUP4, ChecksumMode::WithoutPseudoHeader),
            Err(EncodeError::V2Interval(Duration::from_millis(1500)))
        );
        advert.interval = Duration::from_secs(1);
        assert_eq!(
            advert.encode(A6, GROUP6, ChecksumMode::WithPseudoHeader),
            Err(EncodeError::MixedFamily(advert.addresses[0]))
        );
        let mut v3 = vendor();
        v3.version = Version::V3;
        for bad in [
            Duration::from_millis(5),
            Duration::from_millis(15),
            Duration::from_millis(40960),
            Duration::ZERO,
        ] {
            v3.interval = bad;
            assert_eq!(
                v3.encode(A4, GROUP4, ChecksumMode::WithPseudoHeader),
                Err(EncodeError::V3Interval(bad))
            );
        }
        let mut v2_over_6 = vendor();
        v2_over_6.addresses = vec![IpAddr::V6(Ipv6Addr::LOCALHOST)];
        assert_eq!(
            v2_over_6.encode(A6, GROUP6, ChecksumMode::WithPseudoHeader),
            Err(EncodeError::V2OverIpv6)
        );
    }
}

#[cfg(test)]
mod redaction {
    use super::Auth;

    #[test]
    fn a_password_is_never_debug_printed() {
        let auth = Auth::Password(*b"s3cr3tpw");
        let printed = format!("{auth:?} {:?}", Some(auth));
        assert!(printed.contains("<redacted>"), "{printed}");
        assert!(
            !printed.contains("115") && !printed.contains("s3cr3tpw"),
            "{printed}"
        );
    }
}
