//! The ustar headers archpack writes and checks. Bundles use plain ustar members only:
//! regular files with names under 100 bytes, fixed owner and mode.

use std::io;

pub const BLOCK: u64 = 512;

/// Bytes of zero padding after `size` bytes of data.
pub fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

/// Size a member occupies: header plus padded data.
pub fn member_span(size: u64) -> u64 {
    BLOCK + size + padding(size)
}

/// A deterministic ustar header for a regular file.
pub fn header(name: &str, size: u64, mtime: u64) -> io::Result<[u8; 512]> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_username("")?;
    h.set_groupname("")?;
    h.set_cksum();
    let mut out = [0u8; 512];
    out.copy_from_slice(h.as_bytes());
    Ok(out)
}

/// What a member header says, after its checksum was checked.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedHeader {
    pub name: String,
    pub size: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("end of archive where a member was expected")]
    EndOfArchive,
    #[error("bad tar header checksum")]
    Checksum,
    #[error("not a regular file (tar type {0:?})")]
    NotRegular(char),
    #[error("unreadable header field: {0}")]
    Field(String),
}

/// Parses a ustar header block, checking its checksum and that it is a regular file.
pub fn parse(block: &[u8; 512]) -> Result<ParsedHeader, HeaderError> {
    if block.iter().all(|&b| b == 0) {
        return Err(HeaderError::EndOfArchive);
    }
    let stored = octal(&block[148..156]).ok_or(HeaderError::Checksum)?;
    let computed: u64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as u64
            }
        })
        .sum();
    if stored != computed {
        return Err(HeaderError::Checksum);
    }
    let h = tar::Header::from_byte_slice(block);
    let kind = h.entry_type();
    if !kind.is_file() {
        return Err(HeaderError::NotRegular(kind.as_byte() as char));
    }
    let size = h.size().map_err(|e| HeaderError::Field(e.to_string()))?;
    let name = h
        .path()
        .map_err(|e| HeaderError::Field(e.to_string()))?
        .to_string_lossy()
        .into_owned();
    Ok(ParsedHeader { name, size })
}

fn octal(field: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(field).ok()?;
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    u64::from_str_radix(s, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrips_and_checksum_catches_flips() {
        let h = header("blobs/sha256/abc", 1234, 0).unwrap();
        assert_eq!(
            parse(&h).unwrap(),
            ParsedHeader {
                name: "blobs/sha256/abc".into(),
                size: 1234
            }
        );
        for i in [0usize, 124, 130, 200, 511] {
            let mut bad = h;
            bad[i] ^= 0x01;
            assert!(parse(&bad).is_err(), "flip at {i} accepted");
        }
        assert_eq!(parse(&[0u8; 512]), Err(HeaderError::EndOfArchive));
    }

    #[test]
    fn spans() {
        assert_eq!(member_span(0), 512);
        assert_eq!(member_span(1), 1024);
        assert_eq!(member_span(512), 1024);
    }
}
