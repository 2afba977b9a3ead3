//! archpack: multi-architecture, signed, deduplicated container image bundles for
//! hosts without a network.
//!
//! Data flows one way through one module per stage:
//! [`source`] (read images) → [`bundle`] (the file format: write, read, verify) →
//! signing → host probe → engine → compose. The library never prints; progress goes
//! through [`progress::Progress`].

pub mod bundle;
pub mod compose;
pub mod digest;
pub mod docker;
pub mod engine;
pub mod extract;
pub mod fsutil;
pub mod platform;
pub mod probe;
pub mod progress;
pub mod push;
pub mod signing;
pub mod source;
