//! Graceful leave shown as `Left` rather than `Down`.
//!
//! foca's leave is a Down that a member declares about itself, so the
//! others cannot tell a leave from a crash. Before leaving, an agent spreads
//! a leave intent: a foca custom broadcast, piggybacked on SWIM messages
//! like membership updates, and also sent over TCP to a few members so that
//! it survives UDP loss. Every agent remembers the intents it saw and
//! records the Down that follows as Left; an intent that arrives after the
//! Down turns it into Left then.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foca::{BroadcastHandler, Invalidates};

use super::Member;

/// First byte of a leave intent, so that other kinds of broadcast can be
/// added later and skipped by agents that don't know them.
const INTENT_TAG: u8 = 1;
/// As long as foca remembers a Down member (`Config::remove_down_after`).
const RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// Bounds the memory an agent gives to leave intents.
const MAX_REMEMBERED: usize = 4096;

/// The members known to have left gracefully, shared by the broadcast
/// handler (inside foca) and the runtime.
#[derive(Clone, Default)]
pub(super) struct LeftSet(Arc<Mutex<Inner>>);

#[derive(Default)]
struct Inner {
    known: HashMap<Member, Instant>,
    /// Learned since the runtime last looked.
    fresh: Vec<Member>,
}

impl LeftSet {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `member` left `age` ago. True when it is news.
    pub(super) fn learn(&self, member: Member, age: Duration) -> bool {
        if age >= RETENTION {
            return false;
        }
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.known.contains_key(&member) {
            return false;
        }
        inner.known.retain(|_, at| now.duration_since(*at) < RETENTION);
        if inner.known.len() >= MAX_REMEMBERED
            && let Some(oldest) = inner
                .known
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(m, _)| m.clone())
        {
            inner.known.remove(&oldest);
        }
        // An age longer than this process has run counts from now: the
        // intent is then kept a little longer than needed, never shorter.
        inner
            .known
            .insert(member.clone(), now.checked_sub(age).unwrap_or(now));
        inner.fresh.push(member);
        true
    }

    /// Whether `member` (this very identity) announced its leave.
    pub(super) fn contains(&self, member: &Member) -> bool {
        self.lock().known.contains_key(member)
    }

    /// The members learned since the last call.
    pub(super) fn take_fresh(&self) -> Vec<Member> {
        std::mem::take(&mut self.lock().fresh)
    }

    /// Every remembered intent with its age in milliseconds, for push-pull.
    pub(super) fn snapshot(&self) -> Vec<(Member, u64)> {
        let now = Instant::now();
        self.lock()
            .known
            .iter()
            .map(|(m, at)| (m.clone(), now.duration_since(*at).as_millis() as u64))
            .collect()
    }
}

/// The custom broadcast announcing that `member` leaves.
pub(super) fn intent(member: &Member) -> Vec<u8> {
    let mut data = vec![INTENT_TAG];
    // Serializing a plain struct into a Vec cannot fail.
    if let Ok(body) = postcard::to_allocvec(member) {
        data.extend_from_slice(&body);
    }
    data
}

#[derive(Debug, thiserror::Error)]
pub(super) enum IntentError {
    #[error("empty custom broadcast")]
    Empty,
    #[error("undecodable leave intent: {0}")]
    Decode(#[from] postcard::Error),
}

/// Identifies a leave intent in foca's broadcast backlog.
pub(super) struct LeaveKey {
    addr: SocketAddr,
    incarnation: u64,
}

impl Invalidates for LeaveKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.addr == other.addr && self.incarnation >= other.incarnation
    }
}

/// foca's handler of custom broadcasts: leave intents only.
pub(super) struct LeaveBroadcasts {
    left: LeftSet,
}

impl LeaveBroadcasts {
    pub(super) fn new(left: LeftSet) -> Self {
        LeaveBroadcasts { left }
    }
}

impl BroadcastHandler<Member> for LeaveBroadcasts {
    type Key = LeaveKey;
    type Error = IntentError;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&Member>,
    ) -> Result<Option<LeaveKey>, IntentError> {
        let Some((&tag, body)) = data.split_first() else {
            return Err(IntentError::Empty);
        };
        if tag != INTENT_TAG {
            // From a newer agent: not ours to understand nor to spread.
            return Ok(None);
        }
        let member: Member = postcard::from_bytes(body)?;
        let key = LeaveKey {
            addr: member.gossip_addr,
            incarnation: member.incarnation,
        };
        // Spread only news, or foca would never stop sending it.
        Ok(self.left.learn(member, Duration::ZERO).then_some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(port: u16, incarnation: u64) -> Member {
        let mut m = Member::placeholder(SocketAddr::from(([127, 0, 0, 1], port)));
        m.name = format!("n{port}");
        m.incarnation = incarnation;
        m
    }

    #[test]
    fn intents_are_spread_once() {
        let left = LeftSet::default();
        let mut handler = LeaveBroadcasts::new(left.clone());
        let data = intent(&member(1, 7));
        assert!(handler.receive_item(&data, None).expect("decodes").is_some());
        assert!(handler.receive_item(&data, None).expect("decodes").is_none());
        assert!(left.contains(&member(1, 7)));
        assert!(!left.contains(&member(1, 8)));
        assert_eq!(left.take_fresh(), vec![member(1, 7)]);
        assert!(left.take_fresh().is_empty());
        assert!(
            handler
                .receive_item(&[9, 1, 2], None)
                .expect("unknown tag")
                .is_none()
        );
        assert!(handler.receive_item(&[INTENT_TAG, 0xff], None).is_err());
    }

    #[test]
    fn old_intents_are_forgotten() {
        let left = LeftSet::default();
        assert!(!left.learn(member(1, 1), RETENTION));
        assert!(left.learn(member(2, 1), Duration::from_secs(5)));
        let snap = left.snapshot();
        assert_eq!(snap.len(), 1);
        assert!(snap[0].1 >= 5000);
    }
}
