//! Development parts: an OpenID provider and an echo upstream built into the binary, for the demo and
//! for trying a configuration before the federation's integration platform is reachable.

mod echo;
mod identities;
mod provider;

pub use echo::Echo;
pub use identities::IDENTITIES;
pub use provider::{DevKeyError, DevProvider};
