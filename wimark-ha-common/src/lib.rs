//! What the XDP program and the daemon must agree on, defined once.
//!
//! This is a crate of its own (not a library target of `wimark-ha-ebpf`) so the
//! host workspace never compiles aya-ebpf: the kernel object builds with Debian's
//! rustc for `bpfel-unknown-none`, the daemon with the stable host toolchain, and
//! both include this `no_std`, dependency-free code.
//!
//! - [`abi`]: the `#[repr(C)]` map keys, values and ring-buffer events.
//! - [`classify`]: the packet classifier. The same function runs inside the XDP
//!   program (over a bounds-checked view of the frame) and in userspace (over a
//!   byte slice), so the unit tests, the fuzz target, the AF_PACKET comparison
//!   counter and the daemon all judge a packet exactly as the kernel does.
//!
//! Must not touch: maps, helpers, sockets, allocation. Nothing here may panic
//! or loop without a constant bound (the verifier must accept it).
#![no_std]

pub mod abi;
pub mod classify;
