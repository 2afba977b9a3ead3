//! The archpack bundle format (`bundle-format/SPEC.md`): one plain tar holding an OCI
//! image layout, with archpack's own index (and its signature) first.
//!
//! This crate is the format and nothing else: the index types ([`index`]), the tar
//! layout ([`ustar`]), the OCI documents a bundle carries ([`oci`]), the layer codec
//! ([`codec`]), a reader that verifies as it reads, from a file or a stream
//! ([`reader`]), and a writer that places members in the specified order whatever order
//! their bytes arrive in ([`writer`]). No engine, no network, no sources, no printing;
//! every input is bounded ([`limits`]) before it is trusted with memory.

pub mod codec;
pub mod delta;
pub mod digest;
pub mod error;
pub mod index;
pub mod inventory;
pub mod limits;
pub mod loaders;
pub mod oci;
pub mod parts;
pub mod platform;
pub mod progress;
pub mod reader;
pub mod ustar;
pub mod volumes;
pub mod writer;

pub use digest::Digest;
pub use error::{exit, FormatError, GateRefusal};
pub use index::*;
pub use platform::Platform;
pub use reader::{AdmitAll, BundleReader, IndexGate, MemberReader, VerifyReport};
pub use writer::{BundleWriter, IndexSigner, LayerArrival, PlannedImage, WriterOptions};
