//! fleetban's wire contract: the generated gRPC code for package
//! `fleetban.v1`, and the conversions between wire messages and the domain
//! types the rest of fleetban uses. Protobuf types stop here.

pub mod config;
pub mod convert;
pub mod identity;
pub mod ports;

/// Generated code of package `fleetban.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("fleetban.v1");
}

pub use convert::{parse_target, BlockEntry, InvalidMessage};
pub use ports::{PortError, PortRange, PortScope, Protocol};
