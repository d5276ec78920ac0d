//! The one binary record format for what servers keep and send each other
//! inside typed messages: log entries, snapshot bodies, forwarded commands
//! and their outcomes.
//!
//! A record is a format version byte followed by the body. Version 3, what
//! this build writes, is postcard (compact, positional serde). Older
//! versions are still read, so a data directory from an older build opens:
//! version 2 was postcard of the types before WAN addresses, gateway modes,
//! intermediate CAs and remote datacenters were added (each [`Record`] type
//! reads it through the old shapes it kept), version 1 was JSON. A type
//! change that postcard cannot read positionally (a field added, removed or
//! reordered in a logged type) takes a new version byte and a decoder for
//! the old one beside it; a variant added at the end of an enum does not,
//! nor does a field added at the end of the catalog (`CatalogData`), which
//! ends every record that holds it: version 3 grew remote datacenters, ACLs,
//! ACL roles and peerings there, each empty by default, and postcard writes
//! an empty default as zero bytes, so an older record reads with zeros
//! appended ([`TAIL_PADDING`]).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// JSON, written by builds before the binary format; read only.
const JSON_V1: u8 = 1;
/// postcard, of the types as they were before version 3; read only.
const POSTCARD_V2: u8 = 2;
/// postcard.
const POSTCARD_V3: u8 = 3;

/// Zero bytes read after a version 3 body: what the fields appended to the
/// catalog's end since it was written encode to when empty.
const TAIL_PADDING: [u8; 16] = [0; 16];

/// A type kept in records. `from_v2` reads a body that version 2 wrote:
/// types whose shape did not change since decode it as they are.
pub(crate) trait Record: Serialize + DeserializeOwned {
    fn from_v2(body: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(body)
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum CodecError {
    #[error("empty record")]
    Empty,
    #[error("record format version {0} is not known to this tribune")]
    UnknownVersion(u8),
    #[error("unreadable record (format {version}): {message}")]
    Body { version: u8, message: String },
    #[error("cannot encode record: {0}")]
    Encode(String),
}

pub(crate) fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![POSTCARD_V3];
    postcard::to_io(v, &mut out).map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

pub(crate) fn decode<T: Record>(b: &[u8]) -> Result<T, CodecError> {
    let body = |version: u8, message: String| CodecError::Body { version, message };
    match b.split_first() {
        Some((&POSTCARD_V3, rest)) => match postcard::from_bytes(rest) {
            Ok(t) => Ok(t),
            Err(postcard::Error::DeserializeUnexpectedEnd) => {
                let padded = [rest, &TAIL_PADDING[..]].concat();
                postcard::from_bytes(&padded).map_err(|e| body(POSTCARD_V3, e.to_string()))
            }
            Err(e) => Err(body(POSTCARD_V3, e.to_string())),
        },
        Some((&POSTCARD_V2, rest)) => T::from_v2(rest).map_err(|e| body(POSTCARD_V2, e.to_string())),
        Some((&JSON_V1, rest)) => serde_json::from_slice(rest).map_err(|e| body(JSON_V1, e.to_string())),
        Some((&v, _)) => Err(CodecError::UnknownVersion(v)),
        None => Err(CodecError::Empty),
    }
}

/// Decodes the leading fields of a record as `T`, ignoring the rest (a
/// snapshot's metadata without its catalog): fields whose shape is the same
/// in versions 2 and 3. JSON records are decoded whole as `Full` and cut
/// down with `part`.
pub(crate) fn decode_prefix<T: DeserializeOwned, Full: Record>(
    b: &[u8],
    part: impl FnOnce(Full) -> T,
) -> Result<T, CodecError> {
    let body = |version: u8, message: String| CodecError::Body { version, message };
    match b.split_first() {
        Some((&v @ (POSTCARD_V2 | POSTCARD_V3), rest)) => postcard::take_from_bytes(rest)
            .map(|(t, _)| t)
            .map_err(|e| body(v, e.to_string())),
        Some((&JSON_V1, _)) => decode::<Full>(b).map(part),
        Some((&v, _)) => Err(CodecError::UnknownVersion(v)),
        None => Err(CodecError::Empty),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::command::{Command, Request};

    #[test]
    fn writes_binary_and_still_reads_the_json_of_older_builds() {
        let req = Request {
            commands: vec![Command::Deregister {
                service_id: "web-1".into(),
            }],
        };
        let bin = encode(&req).unwrap();
        assert_eq!(bin[0], POSTCARD_V3);
        let back: Request = decode(&bin).unwrap();
        assert_eq!(format!("{back:?}"), format!("{req:?}"));

        let mut json = vec![JSON_V1];
        json.extend(serde_json::to_vec(&req).unwrap());
        assert!(bin.len() < json.len(), "binary is the smaller encoding");
        let old: Request = decode(&json).unwrap();
        assert_eq!(format!("{old:?}"), format!("{req:?}"));
    }

    /// A catalog written by a build before ACL roles, before ACLs, or
    /// before peerings ends early; it reads with those empty.
    #[test]
    fn a_catalog_from_before_its_last_fields_reads_them_as_empty() {
        use crate::catalog::model::{CatalogData, Node};
        let data = CatalogData {
            nodes: vec![Node {
                name: "n1".into(),
                address: "10.0.0.1".into(),
                wan_address: String::new(),
                datacenter: "dc1".into(),
                meta: Default::default(),
                create_index: 1,
                modify_index: 1,
            }],
            ..Default::default()
        };
        let full = encode(&data).unwrap();
        // peering (2 bytes), ACL roles (1 more), the rest of ACLs (3 more),
        // remote datacenters (1 more): each build's record is shorter.
        for cut in [2, 3, 6, 7] {
            let old = &full[..full.len() - cut];
            let back: CatalogData = decode(old).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            assert_eq!(back.nodes, data.nodes);
            assert_eq!(back.acl, Default::default());
            assert_eq!(back.peering, Default::default());
        }
    }

    #[test]
    fn refuses_unknown_versions_and_garbage() {
        assert!(matches!(decode::<Request>(&[]), Err(CodecError::Empty)));
        assert!(matches!(
            decode::<Request>(&[9, 1, 2]),
            Err(CodecError::UnknownVersion(9))
        ));
        assert!(matches!(
            decode::<Request>(&[POSTCARD_V3, 0xff, 0xff, 0xff]),
            Err(CodecError::Body { .. })
        ));
    }
}
