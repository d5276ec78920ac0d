//! `snapshot save`, wipe, `snapshot restore`: the same catalog, indexes and all.

use tribune_tests::{Agent, Ports, api, catalog_dump, instance};

#[tokio::test(flavor = "multi_thread")]
async fn save_wipe_restore_gives_an_identical_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let mut agent = Agent::start_in(&dir.path().join("a"), ports.clone(), &[]);
    let c = agent.client().await;
    for i in 0..20 {
        let mut r = instance(
            if i % 2 == 0 { "web" } else { "api" },
            &format!("i-{i}"),
            8000 + i,
        );
        r.service.as_mut().unwrap().tags = vec![format!("t{i}")];
        r.checks = vec![api::CheckDefinition {
            kind: Some(api::check_definition::Kind::TtlMs(30_000)),
            ..Default::default()
        }];
        c.register(r).await.unwrap();
    }
    c.update_ttl("service:i-3", api::HealthStatus::Warning, "slow")
        .await
        .unwrap();
    let before = catalog_dump(&c).await;

    let file = dir.path().join("backup.snap");
    let out = agent.cli_ok(&["snapshot", "save", file.to_str().unwrap()]);
    assert!(out.contains("Saved snapshot"), "{out}");

    // Wipe: a brand-new server with an empty data dir.
    agent.kill9();
    drop(agent);
    std::fs::remove_dir_all(dir.path().join("a")).unwrap();
    let agent = Agent::start_in(&dir.path().join("b"), ports, &[]);
    let c = agent.client().await;
    assert!(c.get_service("web", false).await.unwrap().instances.is_empty());

    let out = agent.cli_ok(&["snapshot", "restore", file.to_str().unwrap()]);
    assert!(out.contains("Restored snapshot"), "{out}");
    assert_eq!(catalog_dump(&c).await, before);

    // A damaged file is refused and the catalog stays as it was.
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    let bad = dir.path().join("bad.snap");
    std::fs::write(&bad, bytes).unwrap();
    let out = agent.cli(&["snapshot", "restore", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("checksum"), "{err}");
    assert_eq!(catalog_dump(&c).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_resets_watchers() {
    let agent = Agent::start(&[]);
    let c = agent.client().await;
    c.register(instance("web", "web-1", 80)).await.unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    agent.cli_ok(&["snapshot", "save", file.path().to_str().unwrap()]);
    c.register(instance("web", "web-2", 81)).await.unwrap();

    let mut w = c.watch_service("web", 0).await.unwrap();
    assert_eq!(w.message().await.unwrap().unwrap().upserts.len(), 2);
    agent.cli_ok(&["snapshot", "restore", file.path().to_str().unwrap()]);
    let ev = w.message().await.unwrap().unwrap();
    assert!(
        ev.snapshot,
        "a restore replaces everything: watchers get a new snapshot"
    );
    assert_eq!(ev.upserts.len(), 1);
}

/// A restore acknowledged by a single server is durable: killed right after
/// the acknowledgement and restarted, the server has the restored catalog and
/// the restored CA, never its own state from before the restore.
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_survives_kill_9_right_after_its_acknowledgement() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = Agent::start_in(&dir.path().join("a"), Ports::free(), &[]);
    let c = source.client().await;
    for i in 0..50 {
        c.register(instance("web", &format!("web-{i}"), 9000 + i))
            .await
            .unwrap();
    }
    let web = |r: api::GetServiceResponse| -> Vec<(String, u64)> {
        r.instances
            .into_iter()
            .map(|i| i.service.unwrap())
            .map(|s| (s.id, s.modify_index))
            .collect()
    };
    let before = web(c.get_service("web", false).await.unwrap());
    assert_eq!(before.len(), 50);
    let roots_before = c.ca_roots().await.unwrap();
    let file = dir.path().join("backup.snap");
    source.cli_ok(&["snapshot", "save", file.to_str().unwrap()]);
    source.kill9();

    let mut target = Agent::start_in(&dir.path().join("b"), Ports::free(), &[]);
    let own_ca = target.client().await.ca_roots().await.unwrap();
    assert_ne!(own_ca.trust_domain, roots_before.trust_domain);
    let out = target.cli_ok(&["snapshot", "restore", file.to_str().unwrap()]);
    assert!(out.contains("Restored snapshot"), "{out}");
    target.kill9();
    target.restart();

    let c = target.client().await;
    let roots = c.ca_roots().await.unwrap();
    assert_eq!(
        roots.trust_domain, roots_before.trust_domain,
        "the restored CA is back"
    );
    assert_eq!(roots.active_root_id, roots_before.active_root_id);
    assert_eq!(web(c.get_service("web", false).await.unwrap()), before);
}
