//! VRRP: the wire codec ([`packet`]) and the sans-IO state machine
//! ([`machine`]).
//!
//! Owns: the meaning of VRRP bytes. Must not touch sockets, clocks or maps:
//! everything here is pure, so it can be tested and fuzzed byte by byte.
pub mod machine;
pub mod packet;

pub use machine::{
    hold_interval, Action, FastDetect, Ignored, Instance, Params, Reason, State, Timestamp,
    SHUTDOWN_VIP_HOLD,
};
pub use packet::{Advert, Auth, ChecksumMode, EncodeError, Version};
pub use wimark_ha_common::classify::{DecodeError, VrrpRejection};
