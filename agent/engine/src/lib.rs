//! fleetban's detection core: turns log lines into failures (filters) and
//! failures into bans (jails). Pure: no I/O, no async, time is an input.

#![forbid(unsafe_code)]

pub mod date;
pub mod fail2ban;
pub mod filter;
pub mod jail;

pub use filter::{Failure, Filter, FilterError, FilterOptions, HostKind, LineResult};
pub use jail::{Ban, Jail, JailSettings};
