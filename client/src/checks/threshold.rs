//! success-before-passing / failures-before-critical: a check changes
//! status only after enough results in a row agree, so one slow answer
//! does not flap an instance out of every proxy.

use crate::api::HealthStatus;

/// Counts results in a row for one check.
#[derive(Clone, Debug, Default)]
pub struct Threshold {
    success_before_passing: u32,
    failures_before_critical: u32,
    successes: u32,
    failures: u32,
}

impl Threshold {
    /// 0 and 1 both mean "at once".
    pub fn new(success_before_passing: u32, failures_before_critical: u32) -> Self {
        Threshold {
            success_before_passing,
            failures_before_critical,
            ..Default::default()
        }
    }

    /// The status the check should have after `result`, given that it has
    /// `current`: `result` once enough results in a row agree, else `current`.
    pub fn observe(&mut self, current: HealthStatus, result: HealthStatus) -> HealthStatus {
        if result == HealthStatus::Passing {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.successes >= self.success_before_passing {
                return result;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.failures >= self.failures_before_critical {
                return result;
            }
        }
        current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthStatus::{Critical, Passing, Warning};

    #[test]
    fn without_thresholds_every_result_counts() {
        let mut t = Threshold::new(0, 0);
        assert_eq!(t.observe(Critical, Passing), Passing);
        assert_eq!(t.observe(Passing, Warning), Warning);
        assert_eq!(t.observe(Warning, Critical), Critical);
    }

    #[test]
    fn a_check_turns_critical_after_enough_failures_in_a_row() {
        let mut t = Threshold::new(1, 3);
        assert_eq!(t.observe(Passing, Critical), Passing);
        assert_eq!(t.observe(Passing, Critical), Passing);
        // A success in between starts the count again.
        assert_eq!(t.observe(Passing, Passing), Passing);
        assert_eq!(t.observe(Passing, Critical), Passing);
        assert_eq!(t.observe(Passing, Critical), Passing);
        assert_eq!(t.observe(Passing, Critical), Critical);
    }

    #[test]
    fn a_check_turns_passing_after_enough_successes_in_a_row() {
        let mut t = Threshold::new(2, 1);
        assert_eq!(t.observe(Critical, Passing), Critical);
        assert_eq!(t.observe(Critical, Passing), Passing);
        assert_eq!(t.observe(Passing, Critical), Critical);
        assert_eq!(t.observe(Critical, Passing), Critical);
    }
}
