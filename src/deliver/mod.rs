//! Delivering a bundle's images where they run: into an engine ([`engine`]), a registry
//! ([`registry`]), or an archive another runtime loads ([`archive`]).

pub mod archive;
pub mod delta;
pub mod engine;
pub mod registry;
pub mod resolve;
