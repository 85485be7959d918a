//! The user's identity: claim normalisation, scope rules, and the headers an upstream receives.

pub mod assertion;
pub mod headers;
pub mod normalise;
pub mod scopes;

pub use headers::{encode_value, render_headers, IdentityHeaderFilter};
pub use normalise::{claim_text, normalise};
