//! Input rules for everything a user can write into the catalog. Each error
//! names the field it is about, so the API can answer INVALID_ARGUMENT with a
//! message a person can act on. The limits are documented in README.md.

use std::net::IpAddr;

pub(crate) const MAX_NAME_LEN: usize = 63;
pub(crate) const MAX_ID_LEN: usize = 128;
pub(crate) const MAX_TAGS: usize = 64;
pub(crate) const MAX_TAG_LEN: usize = 255;
pub(crate) const MAX_META: usize = 64;
pub(crate) const MAX_META_KEY_LEN: usize = 128;
pub(crate) const MAX_META_VALUE_LEN: usize = 512;
pub(crate) const MAX_ADDRESS_LEN: usize = 253;
pub(crate) const MAX_CHECKS: usize = 32;
/// success_before_passing / failures_before_critical at most.
pub(crate) const MAX_CHECK_THRESHOLD: u32 = 100;
pub(crate) const MAX_UPSTREAMS: usize = 64;
pub(crate) const MIN_INTERVAL_MS: u64 = 1_000;
pub(crate) const MAX_INTERVAL_MS: u64 = 24 * 3600 * 1000;
pub(crate) const MAX_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub(crate) struct FieldError {
    pub field: String,
    pub message: String,
}

pub(crate) type Result<T> = std::result::Result<T, FieldError>;

pub(crate) fn err<T>(field: impl Into<String>, message: impl Into<String>) -> Result<T> {
    Err(FieldError {
        field: field.into(),
        message: message.into(),
    })
}

/// A service name is a DNS label (RFC 1123), lower case, so that it can stand
/// in an SNI name and a DNS query unchanged.
pub(crate) fn service_name(field: &str, v: &str) -> Result<()> {
    let ok = !v.is_empty()
        && v.len() <= MAX_NAME_LEN
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-')
        && !v.ends_with('-');
    if ok {
        Ok(())
    } else {
        err(
            field,
            format!(
                "{v:?} is not a valid service name: use 1 to {MAX_NAME_LEN} lower-case letters, digits and '-', \
                 starting and ending with a letter or digit (an RFC 1123 DNS label)"
            ),
        )
    }
}

/// IDs: 1 to 128 printable ASCII characters, no spaces.
pub(crate) fn id(field: &str, v: &str) -> Result<()> {
    if v.is_empty() {
        return err(field, "is required");
    }
    if v.len() > MAX_ID_LEN {
        return err(
            field,
            format!("is {} characters long; at most {MAX_ID_LEN} are allowed", v.len()),
        );
    }
    if !v.bytes().all(|b| b.is_ascii_graphic()) {
        return err(
            field,
            format!("{v:?} has a character that is not printable ASCII (spaces are not allowed)"),
        );
    }
    Ok(())
}

/// Node names: 1 to 128 of letters, digits, '-', '_' and '.'.
pub(crate) fn node_name(field: &str, v: &str) -> Result<()> {
    let ok = !v.is_empty()
        && v.len() <= MAX_ID_LEN
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        err(
            field,
            format!(
                "{v:?} is not a valid node name: use 1 to {MAX_ID_LEN} letters, digits, '-', '_' and '.'"
            ),
        )
    }
}

pub(crate) fn port(field: &str, v: u32) -> Result<u16> {
    match u16::try_from(v) {
        Ok(p) if p >= 1 => Ok(p),
        _ => err(field, format!("{v} is not a port: use 1 to 65535")),
    }
}

/// An IP address or a DNS host name.
pub(crate) fn address(field: &str, v: &str) -> Result<()> {
    if v.is_empty() {
        return err(field, "is required");
    }
    if v.len() > MAX_ADDRESS_LEN {
        return err(field, format!("is longer than {MAX_ADDRESS_LEN} characters"));
    }
    if v.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let host_ok = v.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= MAX_NAME_LEN
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    });
    if host_ok {
        Ok(())
    } else {
        err(field, format!("{v:?} is neither an IP address nor a host name"))
    }
}

/// HOST:PORT, as TCP and gRPC checks take it.
pub(crate) fn host_port(field: &str, v: &str) -> Result<()> {
    split_host_port(field, v).map(drop)
}

/// HOST:PORT, split.
pub(crate) fn split_host_port(field: &str, v: &str) -> Result<(String, u16)> {
    let Some((host, p)) = v.rsplit_once(':') else {
        return err(field, format!("{v:?} is not HOST:PORT"));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    address(field, host)?;
    match p.parse::<u32>() {
        Ok(n) => Ok((host.to_string(), port(field, n)?)),
        Err(_) => err(field, format!("{v:?} has no valid port after ':'")),
    }
}

pub(crate) fn http_url(field: &str, v: &str) -> Result<()> {
    let rest = v.strip_prefix("http://").or_else(|| v.strip_prefix("https://"));
    match rest {
        Some(r) if !r.is_empty() && v.len() <= 2048 => {
            let authority = r.split('/').next().unwrap_or_default();
            if authority.contains(':') {
                host_port(field, authority)
            } else {
                address(field, authority)
            }
        }
        _ => err(field, format!("{v:?} is not an http:// or https:// URL")),
    }
}

pub(crate) fn tags(field: &str, v: &[String]) -> Result<()> {
    if v.len() > MAX_TAGS {
        return err(
            field,
            format!("has {} tags; at most {MAX_TAGS} are allowed", v.len()),
        );
    }
    for (i, t) in v.iter().enumerate() {
        if t.is_empty() || t.len() > MAX_TAG_LEN || t.chars().any(char::is_control) {
            return err(
                format!("{field}[{i}]"),
                format!("{t:?} is not a valid tag: use 1 to {MAX_TAG_LEN} characters, no control characters"),
            );
        }
    }
    Ok(())
}

pub(crate) fn meta<'a>(
    field: &str,
    v: impl ExactSizeIterator<Item = (&'a String, &'a String)>,
) -> Result<()> {
    if v.len() > MAX_META {
        return err(
            field,
            format!("has {} pairs; at most {MAX_META} are allowed", v.len()),
        );
    }
    for (k, val) in v {
        let key_ok = !k.is_empty()
            && k.len() <= MAX_META_KEY_LEN
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !key_ok {
            return err(
                format!("{field}[{k:?}]"),
                format!("key {k:?} is not valid: use 1 to {MAX_META_KEY_LEN} letters, digits, '_' and '-'"),
            );
        }
        if val.len() > MAX_META_VALUE_LEN {
            return err(
                format!("{field}[{k:?}]"),
                format!(
                    "value is {} bytes long; at most {MAX_META_VALUE_LEN} are allowed",
                    val.len()
                ),
            );
        }
    }
    Ok(())
}

pub(crate) fn interval_ms(field: &str, v: u64) -> Result<u64> {
    if (MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&v) {
        Ok(v)
    } else {
        err(field, format!("{v} ms is out of range: use 1s to 24h"))
    }
}

pub(crate) fn ttl_ms(field: &str, v: u64) -> Result<u64> {
    if (MIN_INTERVAL_MS..=MAX_TTL_MS).contains(&v) {
        Ok(v)
    } else {
        err(field, format!("{v} ms is out of range: use 1s to 7d"))
    }
}

/// Check output is kept but capped, on a character boundary.
pub(crate) use tribune_client::checks::cap_output;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_dns_labels() {
        for ok in ["web", "a", "api-v2", "0abc", &"x".repeat(63)] {
            assert!(service_name("name", ok).is_ok(), "{ok}");
        }
        for bad in ["", "-web", "web-", "Web", "we_b", "we.b", &"x".repeat(64)] {
            let e = service_name("service.name", bad).unwrap_err();
            assert_eq!(e.field, "service.name");
        }
    }

    #[test]
    fn ids_ports_addresses() {
        assert!(id("id", "web-1").is_ok());
        assert!(id("id", "").is_err());
        assert!(id("id", "a b").is_err());
        assert!(id("id", &"i".repeat(129)).is_err());
        assert_eq!(port("port", 8080), Ok(8080));
        assert!(port("port", 0).is_err());
        assert!(port("port", 65536).is_err());
        assert!(address("address", "127.0.0.1").is_ok());
        assert!(address("address", "::1").is_ok());
        assert!(address("address", "db.internal").is_ok());
        assert!(address("address", "no spaces").is_err());
        assert!(host_port("tcp", "127.0.0.1:80").is_ok());
        assert!(host_port("tcp", "[::1]:80").is_ok());
        assert!(host_port("tcp", "127.0.0.1").is_err());
        assert!(http_url("http", "http://127.0.0.1:8080/health").is_ok());
        assert!(http_url("http", "ftp://x").is_err());
    }

    #[test]
    fn tags_and_meta_are_bounded() {
        let many: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
        assert!(tags("tags", &many).is_err());
        assert_eq!(tags("tags", &["".into()]).unwrap_err().field, "tags[0]");
        let m: std::collections::BTreeMap<String, String> =
            [("ok".to_string(), "v".repeat(513))].into_iter().collect();
        assert!(meta("meta", m.iter()).is_err());
        let m: std::collections::BTreeMap<String, String> =
            [("bad key".to_string(), "v".into())].into_iter().collect();
        assert!(meta("meta", m.iter()).is_err());
    }

    #[test]
    fn output_is_capped_on_a_char_boundary() {
        use tribune_client::checks::MAX_OUTPUT_LEN;
        let s = "é".repeat(MAX_OUTPUT_LEN);
        let c = cap_output(&s);
        assert!(c.len() <= MAX_OUTPUT_LEN);
        assert!(s.starts_with(&c));
    }
}
