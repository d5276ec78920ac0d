//! Gossip over real sockets on 127.0.0.1, with short timings.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::*;

fn member(name: &str) -> Member {
    Member {
        name: name.into(),
        gossip_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        role: Role::Server,
        datacenter: "dc1".into(),
        server_addr: String::new(),
        grpc_addr: String::new(),
        wan_addr: None,
        version: "test".into(),
        incarnation: 0,
    }
}

/// SWIM about five times faster than on a LAN, with room left for a loaded
/// two-core machine: a probe gets 300 ms before suspicion, and a suspect
/// 3 s to refute.
fn swim() -> foca::Config {
    let mut c = foca::Config::new_lan(NonZeroU32::MIN.saturating_add(3));
    c.probe_period = Duration::from_millis(400);
    c.probe_rtt = Duration::from_millis(300);
    c.suspect_to_down_after = Duration::from_secs(3);
    c.periodic_gossip = Some(foca::PeriodicParams {
        frequency: Duration::from_millis(100),
        num_members: NonZeroUsize::MIN.saturating_add(2),
    });
    c
}

fn fast() -> GossipConfig {
    GossipConfig {
        retry_interval: Duration::from_millis(50),
        push_pull_interval: Duration::from_secs(1),
        tcp_timeout: Duration::from_secs(2),
        leave_propagate_delay: Duration::from_millis(300),
        swim: Some(swim()),
        ..GossipConfig::default()
    }
}

fn keyed(key: &str) -> GossipConfig {
    GossipConfig {
        keyring: Some(Keyring::new(key).expect("valid key")),
        ..fast()
    }
}

async fn start(name: &str, join: &[&Gossip], cfg: GossipConfig) -> Gossip {
    let join = join.iter().map(|g| g.me().gossip_addr).collect();
    Gossip::start(member(name), join, cfg)
        .await
        .expect("gossip starts")
}

fn state_of(g: &Gossip, name: &str) -> Option<MemberState> {
    g.members()
        .into_iter()
        .find(|m| m.member.name == name)
        .map(|m| m.state)
}

fn alive_names(g: &Gossip) -> Vec<String> {
    let mut names: Vec<String> = g.alive(Role::Server).into_iter().map(|m| m.name).collect();
    names.sort();
    names
}

/// Polls `check` until it holds or `within` passes.
async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Records any member that any of `agents` ever sees Suspect, Down or Left.
fn watch_for_trouble(agents: &[Gossip]) -> (Arc<AtomicBool>, Arc<std::sync::Mutex<Vec<String>>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    for g in agents {
        let (g, stop, seen) = (g.clone(), stop.clone(), seen.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for m in g.members() {
                    if m.state != MemberState::Alive {
                        let line = format!("{} saw {} {:?}", g.me().name, m.member.name, m.state);
                        seen.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
    (stop, seen)
}

const ALL3: [&str; 3] = ["a", "b", "c"];

/// Three members a, b, c with `key`, once each sees all three alive.
async fn three_keyed(key: &str) -> (Gossip, Gossip, Gossip) {
    let a = start("a", &[], keyed(key)).await;
    let b = start("b", &[&a], keyed(key)).await;
    let c = start("c", &[&a], keyed(key)).await;
    for g in [&a, &b, &c] {
        assert!(
            eventually(Duration::from_secs(10), || alive_names(g) == ALL3).await,
            "{} sees {:?}",
            g.me().name,
            g.members()
        );
    }
    (a, b, c)
}

#[tokio::test]
async fn three_members_with_one_key_join() {
    let key = Keyring::generate_key();
    let (a, b, c) = three_keyed(&key).await;
    for g in [&a, &b, &c] {
        assert!(g.encrypted());
        assert_eq!(g.keyring_list(), vec![key.clone()]);
        assert_eq!(g.dropped_packets(), 0);
    }
}

#[tokio::test]
async fn members_without_the_key_cannot_join() {
    let key = Keyring::generate_key();
    let a = start("a", &[], keyed(&key)).await;
    let b = start("b", &[&a], keyed(&key)).await;
    assert!(eventually(Duration::from_secs(10), || alive_names(&a) == ["a", "b"]).await);

    let plain = start("plain", &[&a, &b], fast()).await;
    let other = start("other", &[&a, &b], keyed(&Keyring::generate_key())).await;
    assert!(!plain.encrypted());
    assert!(plain.keyring_list().is_empty());

    // Announces and push-pulls go on every 50 ms: give them 2 s.
    let outsiders = ["plain", "other"];
    for _ in 0..100 {
        for g in [&a, &b] {
            for m in g.members() {
                assert!(
                    !outsiders.contains(&m.member.name.as_str()),
                    "{} lists {}",
                    g.me().name,
                    m.member.name
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(alive_names(&plain), ["plain"]);
    assert_eq!(alive_names(&other), ["other"]);
    assert!(a.dropped_packets() > 0, "a dropped nothing");
    assert!(b.dropped_packets() > 0, "b dropped nothing");
}

#[tokio::test]
async fn key_rotation_keeps_every_member_alive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old = Keyring::generate_key();
    let new = Keyring::generate_key();
    let mut agents = Vec::new();
    for name in ALL3 {
        let cfg = GossipConfig {
            keyring_file: Some(dir.path().join(name).join("local.keyring")),
            ..keyed(&old)
        };
        let join: Vec<&Gossip> = agents.first().into_iter().collect();
        agents.push(start(name, &join, cfg).await);
    }
    for g in &agents {
        assert!(eventually(Duration::from_secs(10), || alive_names(g) == ALL3).await);
    }
    let (stop, trouble) = watch_for_trouble(&agents);
    let settle = Duration::from_millis(700);

    for g in &agents {
        g.keyring_install(&new).expect("install");
    }
    tokio::time::sleep(settle).await;
    for g in &agents {
        g.keyring_use(&new).expect("use");
        tokio::time::sleep(settle / 3).await;
    }
    tokio::time::sleep(settle).await;
    for g in &agents {
        assert!(matches!(g.keyring_remove(&new), Err(KeyringError::RemovePrimary)));
        g.keyring_remove(&old).expect("remove");
    }
    // Long enough for a failed probe to turn into suspicion.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);

    let trouble = trouble.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(trouble.is_empty(), "during rotation: {trouble:?}");
    for g in &agents {
        assert_eq!(alive_names(g), ALL3);
        assert_eq!(g.keyring_list(), vec![new.clone()]);
        let file = dir.path().join(&g.me().name).join("local.keyring");
        assert_eq!(Keyring::load(&file).expect("saved").list(), vec![new.clone()]);
    }

    // The old key no longer gets in; the new one does.
    let stale = start("stale", &[&agents[0]], keyed(&old)).await;
    let fresh = start("fresh", &[&agents[0]], keyed(&new)).await;
    assert!(
        eventually(Duration::from_secs(10), || state_of(&agents[1], "fresh")
            == Some(MemberState::Alive))
        .await
    );
    assert_eq!(state_of(&agents[0], "stale"), None);
    assert_eq!(alive_names(&stale), ["stale"]);
    drop(fresh);
}

#[tokio::test]
async fn keyring_file_wins_and_keyring_ops_need_encryption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("local.keyring");
    let configured = Keyring::generate_key();
    let rotated = Keyring::generate_key();

    // No file yet: the configured key is saved there.
    let cfg = GossipConfig {
        keyring_file: Some(file.clone()),
        ..keyed(&configured)
    };
    let a = start("a", &[], cfg.clone()).await;
    assert_eq!(
        Keyring::load(&file).expect("saved").list(),
        vec![configured.clone()]
    );
    a.keyring_install(&rotated).expect("install");
    a.keyring_use(&rotated).expect("use");
    assert_eq!(a.keyring_list(), vec![rotated.clone(), configured.clone()]);
    a.leave().await;

    // Restarted with the same configured key: the file's rotation stands.
    let a = start("a", &[], cfg).await;
    assert_eq!(a.keyring_list(), vec![rotated.clone(), configured.clone()]);
    let e = a.keyring_use("bad").expect_err("bad key");
    assert!(matches!(e, KeyringError::Base64 { .. }), "{e}");
    assert!(matches!(
        a.keyring_use(&Keyring::generate_key()),
        Err(KeyringError::NotInstalled)
    ));

    let plain = start("plain", &[], fast()).await;
    assert!(matches!(
        plain.keyring_install(&rotated),
        Err(KeyringError::NotEnabled)
    ));

    // A broken file keeps the agent from starting, naming the file.
    std::fs::write(&file, "[]").expect("write");
    let cfg = GossipConfig {
        keyring_file: Some(file.clone()),
        ..keyed(&configured)
    };
    let err = Gossip::start(member("b"), vec![], cfg)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("local.keyring"), "{err}");
}

#[tokio::test]
async fn push_pull_over_tcp_alone() {
    // No probing during the test: a member cut off UDP must not be declared
    // down before it has shown what TCP gives it.
    let slow = || {
        let mut c = swim();
        c.probe_period = Duration::from_secs(60);
        c.periodic_announce = None;
        c
    };
    // Only c starts periodic push-pulls, so what c learns comes from its own.
    let cfg = |key: &str, push_pull_ms: u64| GossipConfig {
        push_pull_interval: Duration::from_millis(push_pull_ms),
        swim: Some(slow()),
        ..keyed(key)
    };
    let key = Keyring::generate_key();
    let a = start("a", &[], cfg(&key, 60_000)).await;
    // c hears nothing over UDP from the start (its runtime has not run yet
    // on this single-threaded test runtime): it joins over TCP.
    let c = start("c", &[&a], cfg(&key, 200)).await;
    c.mute_udp(true);
    assert!(
        eventually(Duration::from_secs(5), || alive_names(&c) == ["a", "c"]).await,
        "{:?}",
        c.members()
    );
    assert!(
        eventually(Duration::from_secs(5), || alive_names(&a) == ["a", "c"]).await,
        "{:?}",
        a.members()
    );

    // b joins a over UDP; c can only learn of it from a periodic push-pull.
    let b = start("b", &[&a], cfg(&key, 60_000)).await;
    assert!(eventually(Duration::from_secs(5), || alive_names(&a) == ALL3).await);
    assert!(
        eventually(Duration::from_secs(5), || alive_names(&c) == ALL3).await,
        "{:?}",
        c.members()
    );
    assert!(
        eventually(Duration::from_secs(5), || alive_names(&b) == ALL3).await,
        "{:?}",
        b.members()
    );
}

#[tokio::test]
async fn messages_too_big_for_udp_go_over_tcp() {
    let key = Keyring::generate_key();
    let tcp_only = || GossipConfig {
        udp_max_datagram: 0,
        ..keyed(&key)
    };
    let a = start("a", &[], tcp_only()).await;
    let b = start("b", &[&a], tcp_only()).await;
    let c = start("c", &[&b], tcp_only()).await;
    for g in [&a, &b, &c] {
        assert!(
            eventually(Duration::from_secs(10), || alive_names(g) == ALL3).await,
            "{} sees {:?}",
            g.me().name,
            g.members()
        );
    }
    // Probes go on over TCP: nobody gets suspected.
    let agents = [a, b, c];
    let (stop, trouble) = watch_for_trouble(&agents);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let trouble = trouble.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(trouble.is_empty(), "{trouble:?}");
}

#[tokio::test]
async fn graceful_leave_shows_as_left() {
    let key = Keyring::generate_key();
    let (a, b, c) = three_keyed(&key).await;
    let (stop, trouble) = watch_for_trouble(&[a.clone(), b.clone()]);
    c.leave().await;
    for g in [&a, &b] {
        assert!(
            eventually(Duration::from_secs(5), || state_of(g, "c")
                == Some(MemberState::Left))
            .await,
            "{} sees {:?}",
            g.me().name,
            g.members()
        );
    }
    stop.store(true, Ordering::Relaxed);
    let trouble = trouble.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(
        trouble.iter().all(|t| t.ends_with("c Left")),
        "c should go straight from Alive to Left: {trouble:?}"
    );

    // A crash, by contrast, is Down: dropping every handle stops b without
    // a word.
    drop(b);
    assert!(
        eventually(Duration::from_secs(10), || state_of(&a, "b")
            == Some(MemberState::Down))
        .await,
        "{:?}",
        a.members()
    );
    assert_eq!(state_of(&a, "c"), Some(MemberState::Left));
}

#[tokio::test]
async fn leave_reaches_members_not_told_over_tcp() {
    // Six members: the TCP notice goes to three of the five others, the
    // rest learn of the leave from the piggybacked intent.
    let key = Keyring::generate_key();
    let names = ["m0", "m1", "m2", "m3", "m4", "m5"];
    let first = start(names[0], &[], keyed(&key)).await;
    let mut agents = vec![first.clone()];
    for name in &names[1..] {
        agents.push(start(name, &[&first], keyed(&key)).await);
    }
    for g in &agents {
        assert!(
            eventually(Duration::from_secs(10), || alive_names(g) == names).await,
            "{} sees {:?}",
            g.me().name,
            g.members()
        );
    }
    let leaver = agents.pop().expect("six agents");
    leaver.leave().await;
    for g in &agents {
        assert!(
            eventually(Duration::from_secs(5), || state_of(g, "m5")
                == Some(MemberState::Left))
            .await,
            "{} sees {:?}",
            g.me().name,
            g.members()
        );
    }
}
