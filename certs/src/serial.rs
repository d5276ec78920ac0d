//! Serial numbers: generation and the one canonical hex rendering used everywhere.
//!
//! # Format
//!
//! `serial_hex` is the **lower-case hex of the serial's big-endian magnitude bytes, two digits per
//! byte, without `:` and without leading `00` bytes** (zero itself renders as `"0"`). That is
//! exactly what Envoy's admin `/certs` prints for `serial_number` (`Utility::getSerialNumberFromCertificate`
//! → BoringSSL `BN_bn2hex`, which strips leading zero *bytes*, lower-cased), and what x509-parser's
//! `raw_serial_as_string()` prints minus the colons whenever the DER INTEGER has no `00` sign-padding.
//!
//! # Generation
//!
//! Serials this crate issues are 16 random bytes (from the OS RNG via ring) whose first byte is
//! forced into `0x10..=0x7f` by rejection sampling (~126.8 bits of entropy). Hence they are
//! positive, their DER encoding never needs a `00` sign byte, and they never start with a zero
//! *nibble*; so every common rendering agrees on the same 32 hex digits: the raw DER bytes,
//! `BN_bn2hex` (Envoy, OpenSSL), x509-parser, and big-integer `%x` renderings that strip leading
//! zero nibbles (Go's `big.Int.Text(16)`, num-bigint's `{:x}`).

use ring::rand::{SecureRandom, SystemRandom};

use crate::CertError;

/// Length in bytes of the serials this crate issues.
pub(crate) const SERIAL_LEN: usize = 16;

/// A fresh random serial: 16 bytes, first byte in `0x10..=0x7f` (see the module docs).
pub(crate) fn random_serial() -> Result<[u8; SERIAL_LEN], CertError> {
    let rng = SystemRandom::new();
    let mut bytes = [0u8; SERIAL_LEN];
    loop {
        rng.fill(&mut bytes).map_err(|_| CertError::Random {
            what: "a serial number",
        })?;
        bytes[0] &= 0x7f;
        if bytes[0] >= 0x10 {
            return Ok(bytes);
        }
    }
}

/// The canonical `serial_hex` for the content bytes of a DER INTEGER (see the module docs).
pub(crate) fn serial_hex(der_integer_bytes: &[u8]) -> String {
    let first_nonzero = der_integer_bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(der_integer_bytes.len());
    let magnitude = &der_integer_bytes[first_nonzero..];
    if magnitude.is_empty() {
        return "0".to_owned();
    }
    lower_hex(magnitude)
}

/// Lower-case hex, two digits per byte, no separators.
pub(crate) fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Lower-case hex SHA-256 of `der`: certificate fingerprints and [`crate::RootCa::id`].
pub(crate) fn sha256_hex(der: &[u8]) -> String {
    lower_hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_serials_are_positive_16_bytes_without_leading_zero_nibble() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let s = random_serial().expect("rng");
            assert!((0x10..=0x7f).contains(&s[0]), "first byte {:#x}", s[0]);
            let hex = serial_hex(&s);
            assert_eq!(hex.len(), 32);
            assert_eq!(hex, lower_hex(&s));
            assert!(!hex.starts_with('0'));
            assert!(seen.insert(s), "duplicate serial");
        }
    }

    #[test]
    fn serial_hex_strips_leading_zero_bytes_like_bn_bn2hex() {
        assert_eq!(serial_hex(&[0x00, 0x80, 0x01]), "8001");
        assert_eq!(serial_hex(&[0x01, 0xab]), "01ab");
        assert_eq!(serial_hex(&[0x00]), "0");
        assert_eq!(serial_hex(&[]), "0");
        assert_eq!(lower_hex(&[0xde, 0xad, 0x0b]), "dead0b");
    }
}
