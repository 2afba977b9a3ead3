//! Caps on everything a reader holds in memory, checked before the bytes are read
//! (SPEC §3.4). The same caps apply to every way a bundle is read (a file, a stream)
//! and writers refuse to produce a member above them, so a bundle one archpack wrote
//! is one every archpack reads.

use crate::index::MemberKind;

/// The bundle index (`archpack-index.json`).
pub const MAX_INDEX_BYTES: u64 = 64 << 20;
/// A minisign signature file is well under 1 KiB.
pub const MAX_SIGNATURE_BYTES: u64 = 16 << 10;
/// An image config (Docker's largest real ones, with long histories, are a few hundred KiB).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// An OCI image manifest or image index (the distribution spec asks registries to take
/// at least 4 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// `oci-layout` is one short JSON object.
pub const MAX_OCI_LAYOUT_BYTES: u64 = 4 << 10;
/// The layout's `index.json`: one descriptor per logical image.
pub const MAX_OCI_INDEX_BYTES: u64 = 4 << 20;
/// The compose template and each override.
pub const MAX_COMPOSE_BYTES: u64 = 1 << 20;
/// A loader binary (static archpack, ~6 MiB), compressed or not: streamed, but bounded
/// so an installer's `dd` arithmetic and a reader's checks stay small.
pub const MAX_LOADER_BYTES: u64 = 64 << 20;
/// The installer script.
pub const MAX_INSTALLER_BYTES: u64 = 64 << 10;
/// Layers are never held in memory; their size is bounded only by the file.
pub const MAX_LAYER_BYTES: u64 = u64::MAX;

/// The largest zstd window (log2) a writer may use and every reader accepts: 2^27 bytes,
/// zstd's own default limit, well inside the 2^30 a 32-bit zstd can decode (SPEC §4).
pub const MAX_WINDOW_LOG: u32 = 27;

/// The cap for a member of `kind`.
pub fn max_member_bytes(kind: MemberKind) -> u64 {
    match kind {
        MemberKind::Layer | MemberKind::LayerPatch => MAX_LAYER_BYTES,
        MemberKind::Config => MAX_CONFIG_BYTES,
        MemberKind::Manifest | MemberKind::ImageIndex => MAX_MANIFEST_BYTES,
        MemberKind::OciLayout => MAX_OCI_LAYOUT_BYTES,
        MemberKind::OciIndex => MAX_OCI_INDEX_BYTES,
    }
}
