//! fail2ban's configuration format, read unchanged: `filter.d/*.conf`,
//! `jail.conf` and friends.

pub mod config;
pub mod filter_def;
pub mod ini;
pub mod jail;
pub mod options;
pub mod regex;

pub use config::{ConfigSet, Fail2banError, Origin, SourceFiles};
pub use filter_def::{read_filter, FilterDefinition, Located};
pub use jail::{read_jails, BantimeIncrement, JailDefinition};
