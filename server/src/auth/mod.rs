//! Who may use the REST API, and how they prove it: users with roles and
//! argon2id passwords who log in for short-lived JWT access tokens and
//! rotating refresh tokens; API tokens with scopes for tools; bouncer keys
//! for CrowdSec bouncers. No axum here: `http::api` calls it.

pub mod accounts;
pub mod jwt;
pub mod password;
pub mod scope;
pub mod secret;
pub mod throttle;

pub use accounts::{Accounts, AuthConfig, AuthError, LoginTokens};
pub use scope::{Principal, Role, Scope};
