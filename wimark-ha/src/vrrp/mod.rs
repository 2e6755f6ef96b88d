//! VRRP: the wire codec ([`packet`]), the sans-IO state machine
//! ([`machine`]) and its inputs and outputs ([`events`]).
//!
//! Owns: the meaning of VRRP bytes. Must not touch sockets, clocks or maps:
//! everything here is pure, so it can be tested and fuzzed byte by byte.
pub mod events;
pub mod machine;
pub mod packet;

pub use events::{Action, FastDetect, Ignored, Params, Reason, State, Timestamp};
pub use machine::{hold_interval, Instance, SHUTDOWN_VIP_HOLD};
pub use packet::{Advert, Auth, ChecksumMode, EncodeError, Version};
pub use wimark_ha_common::classify::{DecodeError, VrrpRejection};
