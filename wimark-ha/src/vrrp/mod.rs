//! VRRP: the wire codec ([`packet`]), the sans-IO state machine
//! ([`machine`]), its inputs and outputs ([`events`]) and the fast rule's
//! learned detection window ([`window`]).
//!
//! Owns: the meaning of VRRP bytes. Must not touch sockets, clocks or maps:
//! everything here is pure, so it can be tested and fuzzed byte by byte.
pub mod events;
pub mod machine;
pub mod packet;
pub mod window;

pub use events::{
    Action, FastDetect, Heartbeat, Ignored, Multiplier, Params, Reason, State, Timestamp,
};
pub use machine::{
    hold_interval, Instance, FAST_RULE_WARMUP, FAST_SKEW_SPAN_MIN, HEARTBEAT_LEASE_INTERVALS,
    SHUTDOWN_VIP_HOLD, VIP_FAULT_HOLD,
};
pub use packet::{Advert, Auth, ChecksumMode, EncodeError, Version};
pub use window::{WindowBasis, WindowStatus};
pub use wimark_ha_common::classify::{DecodeError, VrrpRejection};
