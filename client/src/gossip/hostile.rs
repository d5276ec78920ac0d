//! Hostile gossip input: random and mutated packets never panic the
//! keyring's opening, the SWIM decoder (foca with postcard) or the TCP
//! push-pull decoder; each refuses with an error or yields a message.
//! `PROPTEST_CASES=100000 cargo test -p tribune-client hostile` runs a
//! longer search.

use foca::{AccumulatingRuntime, Foca};
use proptest::prelude::*;

use super::identity::{Member, Role};
use super::keyring::Keyring;
use super::leave::{LeaveBroadcasts, LeftSet};
use super::transport::Wire;

fn member(name: &str) -> Member {
    Member {
        name: name.into(),
        gossip_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 7946)),
        role: Role::Server,
        datacenter: "dc1".into(),
        server_addr: String::new(),
        grpc_addr: String::new(),
        wan_addr: None,
        version: "test".into(),
        incarnation: 1,
    }
}

fn swim() -> Foca<Member, foca::PostcardCodec, rand::rngs::StdRng, LeaveBroadcasts> {
    Foca::with_custom_broadcast(
        member("me"),
        foca::Config::new_lan(std::num::NonZeroU32::MIN.saturating_add(3)),
        rand::make_rng(),
        foca::PostcardCodec,
        LeaveBroadcasts::new(LeftSet::default()),
    )
}

proptest! {
    // 256 cases in the suite (proptest's default); PROPTEST_CASES sets more.
    #[test]
    fn random_datagrams_are_refused_or_handled(data in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let mut foca = swim();
        let mut rt = AccumulatingRuntime::new();
        let _ = foca.handle_data(&data, &mut rt);
        let _ = postcard::from_bytes::<Wire>(&data);
        let keyring = Keyring::new(&Keyring::generate_key()).unwrap();
        prop_assert!(keyring.open(&data).is_err(), "a random packet opened");
    }

    #[test]
    fn mutated_sealed_packets_never_open(flip in 0usize..200, bit in 0u8..8, cut in 0usize..300) {
        let keyring = Keyring::new(&Keyring::generate_key()).unwrap();
        let mut packet = keyring.seal(b"a gossip message of some length");
        let i = flip % packet.len();
        packet[i] ^= 1 << bit;
        prop_assert!(keyring.open(&packet).is_err(), "a flipped bit at {i} went unnoticed");
        packet.truncate(cut.min(packet.len()));
        prop_assert!(keyring.open(&packet).is_err());
    }
}
