//! VRRP: the wire codec ([`packet`]) — and, with the failover engine, the
//! sans-IO state machine.
//!
//! Owns: the meaning of VRRP bytes. Must not touch sockets, clocks or maps:
//! everything here is pure, so it can be tested and fuzzed byte by byte.
pub mod packet;

pub use packet::{Advert, Auth, ChecksumMode, EncodeError, Version};
pub use wimark_ha_common::classify::{DecodeError, VrrpRejection};
