//! wimark-ha: an Active–Standby failover daemon for the Wimark One controller.
//!
//! The layout follows the data flow (docs/design.md):
//! - [`monitor`]: loads and attaches the XDP program, reads its maps and events.
//! - [`vrrp`]: the VRRP codec and the sans-IO state machine (events and time
//!   in, complete actions out).
//! - [`records`] and [`clock`]: the plain records and the two clocks every
//!   layer shares (the bottom floor: they import no layer above them).
//! - [`daemon`]: the engine thread that executes the machine's actions, and
//!   the tasks around it (roles, observer, AP recovery, control, metrics).
//! - [`cli`]: the command line; each subcommand in its own module.
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod doctor;
pub mod history;
pub mod hooks;
pub mod import;
pub mod metrics;
pub mod monitor;
pub mod records;
pub mod recovery;
pub mod roles;
pub mod storm;
pub mod track;
pub mod unit;
pub mod vip;
pub mod vrrp;
pub mod witness;
