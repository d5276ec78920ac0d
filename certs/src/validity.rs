//! Validity windows: Unix seconds ↔ the `time` values rcgen encodes, with range checks.

use time::OffsetDateTime;

use crate::CertError;

/// Clock-skew allowance: certificates become valid this many seconds before "now".
pub(crate) const BACKDATE_SECS: i64 = 60;

/// Latest encodable instant: 9999-12-31T23:59:59Z (GeneralizedTime has four year digits).
const MAX_UNIX: i64 = 253_402_300_799;

/// A checked `[not_before, not_after]` window in Unix seconds, both inclusive as in X.509.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub not_before: i64,
    pub not_after: i64,
}

impl Window {
    /// Validates the window: non-empty, after the epoch, before year 10000.
    pub(crate) fn new(not_before: i64, not_after: i64, what: &'static str) -> Result<Self, CertError> {
        let err = |reason: String| CertError::InvalidValidity { what, reason };
        if not_before < 0 {
            return Err(err(format!("not_before {not_before} is before the Unix epoch")));
        }
        if not_after > MAX_UNIX {
            return Err(err(format!(
                "not_after {not_after} is after 9999-12-31T23:59:59Z"
            )));
        }
        if not_after <= not_before {
            return Err(err(format!(
                "empty window: not_after {not_after} <= not_before {not_before}"
            )));
        }
        Ok(Self {
            not_before,
            not_after,
        })
    }

    /// `[now - BACKDATE_SECS, now + ttl_secs]` (with `ttl_secs > 0`), not yet clipped.
    pub(crate) fn from_now(
        now_unix: i64,
        ttl_secs: i64,
        what: &'static str,
    ) -> Result<(i64, i64), CertError> {
        let err = |reason: String| CertError::InvalidValidity { what, reason };
        if ttl_secs <= 0 {
            return Err(err(format!("ttl_secs must be positive, got {ttl_secs}")));
        }
        let not_before = now_unix
            .checked_sub(BACKDATE_SECS)
            .ok_or_else(|| err(format!("now_unix {now_unix} out of range")))?;
        let not_after = now_unix
            .checked_add(ttl_secs)
            .ok_or_else(|| err(format!("now_unix {now_unix} + ttl_secs {ttl_secs} overflows")))?;
        Ok((not_before, not_after))
    }

    /// The window as rcgen's `(not_before, not_after)`.
    pub(crate) fn to_datetimes(
        self,
        what: &'static str,
    ) -> Result<(OffsetDateTime, OffsetDateTime), CertError> {
        let conv = |t: i64| {
            OffsetDateTime::from_unix_timestamp(t).map_err(|e| CertError::InvalidValidity {
                what,
                reason: format!("time {t}: {e}"),
            })
        };
        Ok((conv(self.not_before)?, conv(self.not_after)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows() {
        assert!(Window::new(0, 1, "x").is_ok());
        assert!(Window::new(-1, 1, "x").is_err());
        assert!(Window::new(5, 5, "x").is_err());
        assert!(Window::new(0, MAX_UNIX + 1, "x").is_err());
        assert_eq!(Window::from_now(1000, 10, "x").ok(), Some((940, 1010)));
        assert!(Window::from_now(1000, 0, "x").is_err());
        assert!(Window::from_now(i64::MAX, 1, "x").is_err());
        let (nb, na) = Window::new(0, MAX_UNIX, "x")
            .and_then(|w| w.to_datetimes("x"))
            .expect("in range");
        assert_eq!((nb.unix_timestamp(), na.year()), (0, 9999));
    }
}
