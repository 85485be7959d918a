//! The OpenID Connect relying party: discovery, authorization request, callback validation, logout.

mod error;
mod jws;
pub mod logout_token;
mod provider;
pub mod types;
mod userinfo;

pub use error::{LoginError, FAILURE_REASONS};
pub use logout_token::{LogoutToken, LogoutTokenError};
pub use provider::{
    build_http_client, claims_parameter, error_chain, AuthorizeOptions, AuthorizeRequest,
    Expectations, Provider, VerifiedLogin,
};
