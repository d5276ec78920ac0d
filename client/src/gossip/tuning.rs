//! SWIM timings, shared by the agent's runtime and the gossip simulation
//! benchmark so that what is measured is what runs.
//!
//! The target (issue 5) is a failure known to all of 1,000 members within
//! 5 s at p99, with no false positive at 5% packet loss. foca's LAN profile
//! (memberlist's defaults) takes 12 s or more at that size; the changes
//! below and the reasons for them are checked by
//! `cargo bench -p tribune-client --bench gossip_sim` (see BENCHMARKS.md).

use std::num::{NonZeroU8, NonZeroU32, NonZeroUsize};
use std::time::Duration;

/// How often each member probes one other member.
///
/// A dead member is first probed after an exponentially distributed wait
/// whose mean is one probe period (every member probes one of the others
/// per period), so the p99 of that wait alone is 4.6 periods: at foca's 1 s
/// it would eat the whole 5 s budget.
const PROBE_PERIOD: Duration = Duration::from_millis(300);

/// When a direct probe counts as unanswered and the indirect probes go out.
/// A LAN round trip is far below this; the rest of the period is left for
/// the four hops of an indirect probe.
const PROBE_RTT: Duration = Duration::from_millis(150);

/// Members asked to probe indirectly after a direct probe fails.
///
/// A live member is suspected only if the direct round trip and all of the
/// indirect (4-hop) paths are lost: at 5% loss that is 0.098 x 0.186^k per
/// probe, 6e-4 for foca's k = 3 (two suspicions a second among 1,000
/// members) but 1.4e-7 for k = 8 (one every hour or so). The extra packets
/// are only sent when a direct probe fails.
const INDIRECT_PROBES: usize = 8;

/// The shortest time a suspected member has to refute before it is
/// declared down: covers a stall of a couple of seconds on a small cluster.
const MIN_SUSPICION: Duration = Duration::from_secs(2);

/// foca's LAN profile for a cluster of about `cluster_size` members, with
/// faster probing and dissemination and a shorter, size-scaled suspicion.
pub fn swim_config(cluster_size: u32) -> foca::Config {
    let size = NonZeroU32::new(cluster_size.max(1)).unwrap_or(NonZeroU32::MIN);
    let mut config = foca::Config::new_lan(size);
    config.probe_period = PROBE_PERIOD;
    config.probe_rtt = PROBE_RTT;
    config.num_indirect_probes = NonZeroUsize::new(INDIRECT_PROBES).unwrap_or(NonZeroUsize::MIN);
    config.suspect_to_down_after = suspicion(size.get());
    config.max_transmissions = config.max_transmissions.max(transmissions(size.get()));
    // Updates (suspicions, refutations, downs) spread in ~log(N) gossip
    // rounds, so shorter rounds shorten both detection and the time a
    // suspected member needs to refute. foca skips a round when there is
    // nothing to send, so a quiet cluster pays nothing for it.
    config.periodic_gossip = Some(foca::PeriodicParams {
        frequency: Duration::from_millis(100),
        num_members: NonZeroUsize::new(4).unwrap_or(NonZeroUsize::MIN),
    });
    config.periodic_announce = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(30),
        num_members: NonZeroUsize::MIN,
    });
    config
}

/// foca's WAN profile (memberlist's): servers of other datacenters are far
/// and few, and a forwarded request learns of a dead server by itself, so
/// the pool favours no false downs over fast detection.
pub fn wan_swim_config(cluster_size: u32) -> foca::Config {
    let size = NonZeroU32::new(cluster_size.max(1)).unwrap_or(NonZeroU32::MIN);
    foca::Config::new_wan(size)
}

/// Time from suspicion to down. The suspicion has to reach the member and
/// its refutation has to come back, each taking ~log(N) gossip rounds, so
/// the window grows with log10(N): 2 s up to 1,000 members, ~2.5 s at 5,000.
fn suspicion(cluster_size: u32) -> Duration {
    let scaled = Duration::from_secs_f64(MIN_SUSPICION.as_secs_f64() * f64::from(cluster_size).log10() / 3.0);
    scaled.max(MIN_SUSPICION)
}

/// How often each member forwards an update. Every member sends it to
/// random peers that many times, so a given member misses it with a
/// probability of about e^-t; t = ln(N) + 7 keeps the chance that anyone
/// misses a given update below 1/1000. A member that missed a down would
/// only learn it when it probes the dead member itself, up to N periods
/// later.
fn transmissions(cluster_size: u32) -> NonZeroU8 {
    let t = (f64::from(cluster_size.max(1)).ln() + 7.0).ceil().min(255.0);
    NonZeroU8::new(t as u8).unwrap_or(NonZeroU8::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspicion_grows_with_log_size() {
        assert_eq!(suspicion(3), MIN_SUSPICION);
        assert_eq!(suspicion(1000), MIN_SUSPICION);
        let at_5000 = suspicion(5000);
        assert!(at_5000 > Duration::from_millis(2400) && at_5000 < Duration::from_millis(2500));
    }

    #[test]
    fn transmissions_cover_the_cluster() {
        assert_eq!(transmissions(100).get(), 12);
        assert_eq!(transmissions(1000).get(), 14);
        assert_eq!(transmissions(5000).get(), 16);
    }

    #[test]
    fn probe_timings_are_valid_for_foca() {
        let c = swim_config(1000);
        assert!(c.probe_rtt < c.probe_period);
        assert!(c.suspect_to_down_after >= c.probe_period);
    }
}
