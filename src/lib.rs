//! Passerelle: an authenticating reverse proxy (OpenID Connect) for French public services.
//!
//! See `README.md` for what it does and `../shared/DESIGN.md` for the contract.

#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod audit;
pub mod config;
pub mod connections;
pub mod dev;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod logging;
pub mod media_type;
pub mod oidc;
pub mod online;
pub mod pages;
pub mod proxy;
pub mod redirect;
pub mod register;
pub mod registration;
pub mod reload;
pub mod routes;
pub mod server;
pub mod session;
pub mod small_app;
pub mod tls;
pub mod upstream;
