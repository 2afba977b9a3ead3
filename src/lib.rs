//! archpack: multi-architecture, signed, deduplicated container image bundles for
//! hosts without a network.
//!
//! One module per stage of the data's trip, data flowing one way:
//! [`source`] (read images) → the bundle format ([`format`], its own crate) →
//! [`trust`] (keys and signatures) → [`platform`] (what this host runs, which of a
//! bundle's platforms fits) → [`deliver`] (into an engine, a registry, an archive).
//! [`ops`] holds the use-cases (`create`, `load`, `push`, …): each takes a resolved
//! request and returns a typed, serialisable report. The library never prints;
//! progress goes through [`progress::Progress`].

pub use archpack_format as format;

pub mod bridge;
pub mod compose;
pub mod deliver;
pub mod docker;
pub mod error;
pub mod fsutil;
pub mod ops;
pub mod platform;
pub mod reference;
pub mod source;
pub mod trust;

pub use archpack_format::{digest, progress};
pub use error::Error;

/// The tool string bundles record (`archpack 0.1.0`).
pub fn tool_string() -> String {
    format!("archpack {}", env!("CARGO_PKG_VERSION"))
}
