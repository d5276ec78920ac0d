//! SWIM timings, shared by the agent's runtime and the gossip simulation
//! benchmark so that what is measured is what runs.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

/// foca's LAN profile for a cluster of about `cluster_size` members, with a
/// periodic announce so that partitions heal.
pub fn swim_config(cluster_size: u32) -> foca::Config {
    let size = NonZeroU32::new(cluster_size.max(1)).unwrap_or(NonZeroU32::MIN);
    let mut config = foca::Config::new_lan(size);
    config.periodic_announce = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(30),
        num_members: NonZeroUsize::MIN,
    });
    config
}
