//! A linearizability checker for a single register, after Wing & Gong with
//! Lowe's memoization: search for an order of the operations that respects
//! real time (an operation that ended before another started comes first)
//! and in which every read returns the latest write. A write whose outcome
//! is unknown (the client saw an error) may take effect at any point after
//! it started, or never.

use std::collections::HashSet;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Write(u64),
    /// What the read returned; `None` = the register was unset.
    Read(Option<u64>),
}

#[derive(Clone, Debug)]
pub struct Event {
    pub op: Op,
    /// Nanoseconds since any common origin.
    pub start: u64,
    /// `None`: the outcome is unknown (only allowed for writes).
    pub end: Option<u64>,
}

/// Ok, or a description of why no linearization exists.
pub fn check(history: &[Event], initial: Option<u64>) -> Result<(), String> {
    if history
        .iter()
        .any(|e| e.end.is_none() && matches!(e.op, Op::Read(_)))
    {
        return Err("reads with an unknown outcome must be left out of the history".into());
    }
    if history.len() > 4096 {
        return Err("history too long for this checker: split it by key".into());
    }
    let mut s = Search {
        h: history,
        done: vec![false; history.len()],
        memo: HashSet::new(),
        required: history.iter().filter(|e| e.end.is_some()).count(),
        required_done: 0,
    };
    if s.go(initial) {
        Ok(())
    } else {
        Err(format!(
            "no linearization of these {} operations exists",
            history.len()
        ))
    }
}

struct Search<'a> {
    h: &'a [Event],
    done: Vec<bool>,
    memo: HashSet<(Vec<u64>, Option<u64>)>,
    required: usize,
    required_done: usize,
}

impl Search<'_> {
    fn key(&self, state: Option<u64>) -> (Vec<u64>, Option<u64>) {
        let mut bits = vec![0u64; self.done.len().div_ceil(64)];
        for (i, d) in self.done.iter().enumerate() {
            if *d {
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        (bits, state)
    }

    fn go(&mut self, state: Option<u64>) -> bool {
        if self.required_done == self.required {
            return true;
        }
        // Nothing may be linearized after an operation that had already ended.
        let min_end = self
            .h
            .iter()
            .zip(&self.done)
            .filter(|(e, d)| !**d && e.end.is_some())
            .filter_map(|(e, _)| e.end)
            .min()
            .unwrap_or(u64::MAX);
        for i in 0..self.h.len() {
            if self.done[i] || self.h[i].start > min_end {
                continue;
            }
            let next = match &self.h[i].op {
                Op::Write(v) => Some(*v),
                Op::Read(r) if *r == state => state,
                Op::Read(_) => continue,
            };
            self.done[i] = true;
            let required = self.h[i].end.is_some();
            if required {
                self.required_done += 1;
            }
            let key = self.key(next);
            if self.memo.insert(key) && self.go(next) {
                return true;
            }
            self.done[i] = false;
            if required {
                self.required_done -= 1;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(op: Op, start: u64, end: Option<u64>) -> Event {
        Event { op, start, end }
    }

    #[test]
    fn a_sequential_history_is_linearizable() {
        let h = vec![
            ev(Op::Read(None), 0, Some(1)),
            ev(Op::Write(1), 2, Some(3)),
            ev(Op::Read(Some(1)), 4, Some(5)),
            ev(Op::Write(2), 6, Some(7)),
            ev(Op::Read(Some(2)), 8, Some(9)),
        ];
        assert!(check(&h, None).is_ok());
    }

    #[test]
    fn a_stale_read_is_rejected() {
        // The write of 2 completed before the read started; the read saw 1.
        let h = vec![
            ev(Op::Write(1), 0, Some(1)),
            ev(Op::Write(2), 2, Some(3)),
            ev(Op::Read(Some(1)), 4, Some(5)),
        ];
        assert!(check(&h, None).is_err());
    }

    #[test]
    fn concurrent_operations_may_go_either_way() {
        // The read overlaps the write: old or new value are both fine.
        for seen in [Some(1), Some(2)] {
            let h = vec![
                ev(Op::Write(1), 0, Some(1)),
                ev(Op::Write(2), 2, Some(10)),
                ev(Op::Read(seen), 3, Some(4)),
            ];
            assert!(check(&h, None).is_ok(), "{seen:?}");
        }
        // But not a value nobody wrote.
        let h = vec![ev(Op::Write(1), 0, Some(1)), ev(Op::Read(Some(7)), 2, Some(3))];
        assert!(check(&h, None).is_err());
    }

    #[test]
    fn reads_cannot_go_back_in_time() {
        // Two sequential reads: new then old, while the write is still open.
        let h = vec![
            ev(Op::Write(1), 0, Some(1)),
            ev(Op::Write(2), 2, Some(20)),
            ev(Op::Read(Some(2)), 3, Some(4)),
            ev(Op::Read(Some(1)), 5, Some(6)),
        ];
        assert!(check(&h, None).is_err());
    }

    #[test]
    fn unknown_writes_may_or_may_not_have_happened() {
        let took_effect = vec![
            ev(Op::Write(1), 0, Some(1)),
            ev(Op::Write(2), 2, None),
            ev(Op::Read(Some(2)), 5, Some(6)),
        ];
        assert!(check(&took_effect, None).is_ok());
        let did_not = vec![
            ev(Op::Write(1), 0, Some(1)),
            ev(Op::Write(2), 2, None),
            ev(Op::Read(Some(1)), 5, Some(6)),
        ];
        assert!(check(&did_not, None).is_ok());
    }
}
