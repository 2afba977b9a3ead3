//! Delivering a bundle's images where they run: into an engine ([`engine`]), a registry
//! ([`registry`]), an archive another runtime loads ([`archive`]), or as a registry
//! answering pulls itself ([`serve`]).

pub mod archive;
pub mod delta;
pub mod engine;
pub mod gzip;
pub mod registry;
pub mod resolve;
pub mod serve;
