//! One self-checking file format for every whole-state copy: Raft snapshots
//! on disk, snapshots sent to a lagging follower, and `snapshot save` files.
//!
//! Layout: magic `TRIBSNAP`, u32 format version, u64 body length, u32 CRC-32
//! of the body (all little-endian), then the body: [`SnapshotBody`] as a
//! `codec` record (format 2, binary). Format 1 files, whose body was bare
//! JSON, are still read.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{LogId, StoredMembership};
use crate::catalog::model::CatalogData;

const MAGIC: &[u8; 8] = b"TRIBSNAP";
/// Bare JSON body; read only.
const FORMAT_V1: u32 = 1;
/// `codec` record body.
const FORMAT_V2: u32 = 2;
const HEADER_LEN: usize = 8 + 4 + 8 + 4;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SnapshotBody {
    pub snapshot_id: String,
    pub last_log_id: Option<LogId>,
    pub membership: StoredMembership,
    pub catalog: CatalogData,
}

/// The leading fields of a [`SnapshotBody`]: what openraft asks about a
/// snapshot, read without decoding its catalog.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct SnapshotHead {
    pub snapshot_id: String,
    pub last_log_id: Option<LogId>,
    pub membership: StoredMembership,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SnapshotFileError {
    #[error("not a Tribune snapshot (bad magic bytes)")]
    BadMagic,
    #[error("snapshot format version {0} is not known to this tribune")]
    UnknownVersion(u32),
    #[error("snapshot is truncated: header says {expected} bytes of body, found {found}")]
    Truncated { expected: u64, found: u64 },
    #[error("snapshot is corrupt: checksum mismatch")]
    Checksum,
    #[error("snapshot body is unreadable: {0}")]
    Body(String),
}

pub(crate) fn encode<B: Serialize>(body: &B) -> Result<Vec<u8>, SnapshotFileError> {
    let record = crate::codec::encode(body).map_err(|e| SnapshotFileError::Body(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER_LEN + record.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_V2.to_le_bytes());
    out.extend_from_slice(&(record.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&record).to_le_bytes());
    out.extend_from_slice(&record);
    Ok(out)
}

/// Checks the header and checksum; the format version and the body.
fn checked(bytes: &[u8]) -> Result<(u32, &[u8]), SnapshotFileError> {
    if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
        return Err(SnapshotFileError::BadMagic);
    }
    let word = |r: std::ops::Range<usize>| -> [u8; 8] {
        let mut w = [0u8; 8];
        w[..r.len()].copy_from_slice(&bytes[r]);
        w
    };
    let version = u32::from_le_bytes(word(8..12)[..4].try_into().unwrap_or_default());
    if version != FORMAT_V1 && version != FORMAT_V2 {
        return Err(SnapshotFileError::UnknownVersion(version));
    }
    let len = u64::from_le_bytes(word(12..20));
    let crc = u32::from_le_bytes(word(20..24)[..4].try_into().unwrap_or_default());
    let body = &bytes[HEADER_LEN..];
    if body.len() as u64 != len {
        return Err(SnapshotFileError::Truncated {
            expected: len,
            found: body.len() as u64,
        });
    }
    if crc32fast::hash(body) != crc {
        return Err(SnapshotFileError::Checksum);
    }
    Ok((version, body))
}

pub(crate) fn decode(bytes: &[u8]) -> Result<SnapshotBody, SnapshotFileError> {
    let (version, body) = checked(bytes)?;
    let unreadable = |e: String| SnapshotFileError::Body(e);
    if version == FORMAT_V1 {
        return serde_json::from_slice(body).map_err(|e| unreadable(e.to_string()));
    }
    crate::codec::decode(body).map_err(|e| unreadable(e.to_string()))
}

/// The snapshot's metadata, checked but without decoding its catalog.
pub(crate) fn decode_head(bytes: &[u8]) -> Result<SnapshotHead, SnapshotFileError> {
    let (version, body) = checked(bytes)?;
    let unreadable = |e: String| SnapshotFileError::Body(e);
    let head = |b: SnapshotBody| SnapshotHead {
        snapshot_id: b.snapshot_id,
        last_log_id: b.last_log_id,
        membership: b.membership,
    };
    if version == FORMAT_V1 {
        return serde_json::from_slice(body)
            .map(head)
            .map_err(|e| unreadable(e.to_string()));
    }
    crate::codec::decode_prefix(body, head).map_err(|e| unreadable(e.to_string()))
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the
/// new one: temp file, fsync, rename, fsync of the directory. Mode 0600:
/// snapshots hold the whole state, secrets included.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    // Each writer its own temp file: a snapshot being built and one being
    // installed may be written at the same time.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension(format!("tmp.{}.{seq}", std::process::id()));
    {
        let mut f = private_file(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(unix)]
pub(crate) fn private_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
pub fn private_file(path: &Path) -> io::Result<File> {
    File::create(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> SnapshotBody {
        SnapshotBody {
            snapshot_id: "1-5-0".into(),
            last_log_id: None,
            membership: Default::default(),
            catalog: Default::default(),
        }
    }

    #[test]
    fn reads_format_1_files_of_older_builds() {
        let json = serde_json::to_vec(&body()).unwrap();
        let mut old = Vec::new();
        old.extend_from_slice(MAGIC);
        old.extend_from_slice(&FORMAT_V1.to_le_bytes());
        old.extend_from_slice(&(json.len() as u64).to_le_bytes());
        old.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
        old.extend_from_slice(&json);
        assert_eq!(decode(&old).unwrap().snapshot_id, "1-5-0");
        assert!(encode(&body()).unwrap().len() < old.len());
    }

    #[test]
    fn the_head_is_read_without_the_catalog() {
        let mut b = body();
        b.catalog.nodes.push(crate::catalog::model::Node {
            name: "n1".into(),
            address: "127.0.0.1".into(),
            wan_address: String::new(),
            datacenter: "dc1".into(),
            meta: Default::default(),
            create_index: 1,
            modify_index: 1,
        });
        let head = decode_head(&encode(&b).unwrap()).unwrap();
        assert_eq!(head.snapshot_id, "1-5-0");
        assert!(matches!(
            decode_head(b"garbage garbage garbage!"),
            Err(SnapshotFileError::BadMagic)
        ));
    }

    #[test]
    fn round_trips_and_detects_damage() {
        let bytes = encode(&body()).unwrap();
        assert_eq!(decode(&bytes).unwrap().snapshot_id, "1-5-0");

        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert!(matches!(decode(&flipped), Err(SnapshotFileError::Checksum)));
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            Err(SnapshotFileError::Truncated { .. })
        ));
        assert!(matches!(
            decode(b"garbage garbage garbage!"),
            Err(SnapshotFileError::BadMagic)
        ));
    }
}
