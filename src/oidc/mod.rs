//! The OpenID Connect relying party: discovery, authorization request, callback validation, logout.

mod error;
mod provider;
pub mod types;

pub use error::LoginError;
pub use provider::{error_chain, AuthorizeRequest, Provider, VerifiedLogin};
