//! The store's tests: the golden state file, generations, the journal's key, the lock.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::fs::temp_path;
use super::*;

fn temp_store(tag: &str) -> (Store, PathBuf) {
    let root = std::env::temp_dir().join(format!("certkeeper-store-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let store = Store::new(&root.join("state"), &root.join("live"), 2);
    store.prepare().unwrap();
    (store, root)
}

/// A real journal, written by certkeeper in hook mode at `accepted` (with the order's test
/// key, made for this file only): the on-disk format may not change a byte.
const GOLDEN: &str = include_str!("../../tests/golden/state-hook-accepted.json");

#[test]
fn the_golden_state_file_loads_and_is_written_back_byte_for_byte() {
    let st: CertState = serde_json::from_str(GOLDEN).unwrap();
    assert_eq!((st.version, st.name.as_str()), (STATE_VERSION, "www.example.com"));
    let j = st.order.as_ref().unwrap();
    assert_eq!(
        (j.kind, j.step, j.job_id),
        (OrderKind::Create, Step::Accepted, Some(4_297_000_000))
    );
    assert_eq!(j.ctid.as_deref(), st.paid.first().map(|p| p.ctid.as_str()));
    assert!(j.key.as_ref().unwrap().0.starts_with("-----BEGIN PRIVATE KEY-----"));
    let names = vec!["www.example.com".to_string(), "example.com".to_string()];
    for r in &j.records {
        r.check(&names).unwrap();
    }
    assert_eq!(
        String::from_utf8(serde_json::to_vec_pretty(&st).unwrap()).unwrap(),
        GOLDEN
    );
    let (store, root) = temp_store("golden");
    fs::write(root.join("state/certs/www.example.com.json"), GOLDEN).unwrap();
    store.save(&store.load("www.example.com").unwrap()).unwrap();
    assert_eq!(
        fs::read_to_string(root.join("state/certs/www.example.com.json")).unwrap(),
        GOLDEN
    );
    fs::remove_dir_all(root).unwrap();
}

#[test]
fn a_state_from_a_newer_certkeeper_is_refused() {
    let (store, root) = temp_store("newer");
    let newer = GOLDEN.replacen("\"version\": 1", "\"version\": 2", 1);
    let path = root.join("state/certs/www.example.com.json");
    fs::write(&path, &newer).unwrap();
    let e = store.load("www.example.com").unwrap_err().to_string();
    assert!(e.contains("newer certkeeper (state format 2"), "{e}");
    assert_eq!(fs::read_to_string(&path).unwrap(), newer);
    fs::remove_dir_all(root).unwrap();
}

#[test]
fn generations_switch_atomically_and_old_ones_are_pruned() {
    let (store, root) = temp_store("gen");
    let g1 = store
        .write_generation(
            "www.example.com",
            "KEY1",
            "CERT1",
            &["INT".into()],
            KeyAccess::default(),
        )
        .unwrap();
    store.switch("www.example.com", g1.number).unwrap();
    let g2 = store
        .write_generation(
            "www.example.com",
            "KEY2",
            "CERT2",
            &["INT".into()],
            KeyAccess::default(),
        )
        .unwrap();
    assert_eq!(store.live_generation("www.example.com"), Some(1));
    store.switch("www.example.com", g2.number).unwrap();
    assert_eq!(store.live_generation("www.example.com"), Some(2));
    let live = root.join("live/www.example.com");
    assert_eq!(fs::read_to_string(live.join("fullchain.pem")).unwrap(), "CERT2\nINT\n");
    let mode = fs::metadata(live.join("privkey.pem")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let g3 = store
        .write_generation("www.example.com", "KEY3", "CERT3", &[], KeyAccess::default())
        .unwrap();
    store.prune("www.example.com", &[2, 3]).unwrap();
    assert!(!g1.dir.exists() && g2.dir.exists() && g3.dir.exists());
    fs::remove_dir_all(root).unwrap();
}

#[test]
fn an_order_key_is_kept_in_the_0600_journal_and_never_shown_in_debug_output() {
    let (store, root) = temp_store("key");
    let mut s = store.load("www.example.com").unwrap();
    s.order = Some(OrderJournal {
        id: "1".into(),
        kind: OrderKind::Create,
        step: Step::Sending,
        started_at: 0,
        spki_sha256: None,
        key: Some(KeyPem("-----BEGIN PRIVATE KEY-----SECRET".into())),
        csr: None,
        records: vec![],
        files: vec![],
        approver: None,
        awaiting_approval_since: None,
        ctid: None,
        sent_at: None,
        job_id: None,
        certificate_id: None,
        leaf: None,
        chain: vec![],
        generation: None,
        term_end: None,
        sent_boot: None,
        known_certificates: Vec::new(),
        answer_unreadable: false,
        clean_searches: 0,
        unresolved_since: None,
    });
    // A temp file left behind by a killed process that had our PID does not block the write.
    let tmp = temp_path(&root.join("state/certs/www.example.com.json"));
    assert!(tmp.file_name().unwrap().len() < 40, "{tmp:?}");
    fs::write(&tmp, "partial").unwrap();
    store.save(&s).unwrap();
    assert!(!tmp.exists());
    let back = store.load("www.example.com").unwrap();
    assert_eq!(
        back.order.as_ref().unwrap().key.as_ref().unwrap().0,
        "-----BEGIN PRIVATE KEY-----SECRET"
    );
    assert!(!format!("{back:?}").contains("SECRET"));
    let mode = fs::metadata(root.join("state/certs/www.example.com.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    fs::remove_dir_all(root).unwrap();
}

#[test]
fn state_round_trips_and_old_files_without_new_fields_load() {
    let (store, root) = temp_store("state");
    let mut s = store.load("www.example.com").unwrap();
    assert_eq!(s.version, STATE_VERSION);
    s.certificate_id = Some(4_297_000_000);
    store.save(&s).unwrap();
    assert_eq!(
        store.load("www.example.com").unwrap().certificate_id,
        Some(4_297_000_000)
    );
    let mode = fs::metadata(root.join("state/certs/www.example.com.json"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    fs::write(
        root.join("state/certs/old.example.com.json"),
        br#"{"version":1,"name":"old.example.com"}"#,
    )
    .unwrap();
    assert_eq!(store.load("old.example.com").unwrap().generation, None);
    assert_eq!(store.known_names(), ["old.example.com", "www.example.com"]);
    fs::remove_dir_all(root).unwrap();
}

#[test]
fn a_second_lock_names_the_holder() {
    let (store, root) = temp_store("lock");
    let _held = store.lock().unwrap();
    let err = store.lock().unwrap_err();
    assert!(err.contains(&format!("PID {}", std::process::id())), "{err}");
    fs::remove_dir_all(root).unwrap();
}

/// What a killed run left is swept by the next; after a clean end the lock file says so and
/// the next run skips the sweep (at 100,000 certificates, 200,000 directory entries). A run
/// that ended with a temp file it made still in place, or one that never swept what it found,
/// does not say so.
#[test]
fn a_clean_end_spares_the_next_run_its_sweep_and_nothing_else_does() {
    let (store, root) = temp_store("sweep");
    let leftover = store.state_dir.join("certs/.tmp-4242-00112233aabbccdd");
    let lock_file = store.state_dir.join("lock");
    // A run killed mid-write: its PID alone in the lock file, a temp file beside the states.
    fs::write(&lock_file, "4242\n").unwrap();
    fs::write(&leftover, "{").unwrap();
    let mut lock = store.lock().unwrap();
    assert!(!lock.found_clean());
    lock.sweep();
    assert!(!leftover.exists(), "the leftover was not swept");
    store
        .save(&CertState {
            name: "a.example.com".into(),
            ..CertState::default()
        })
        .unwrap();
    drop(lock);
    let text = fs::read_to_string(&lock_file).unwrap();
    assert_eq!(text.lines().nth(1), Some(ENDED_CLEANLY), "{text}");

    // The next holder finds it clean; only while it holds the lock does the file say otherwise.
    // The state directory itself is swept all the same: a campaign command writes its plan
    // there for a running daemon without the lock.
    let campaign_leftover = store.state_dir.join(".tmp-4343-00112233aabbccdd");
    fs::write(&campaign_leftover, "{").unwrap();
    let mut lock = store.lock().unwrap();
    assert!(lock.found_clean());
    assert_eq!(
        fs::read_to_string(&lock_file).unwrap(),
        format!("{}\n", std::process::id())
    );
    lock.sweep();
    assert!(!campaign_leftover.exists(), "the state directory was not swept");
    assert!(lock.found_clean());
    drop(lock);

    // A holder that found no clean end and did not sweep (a probe, as a campaign's) leaves none.
    fs::write(&lock_file, "4242\n").unwrap();
    drop(store.lock().unwrap());
    assert_eq!(fs::read_to_string(&lock_file).unwrap().lines().nth(1), None);

    // A temp file made and not renamed into place: no clean end.
    let mut lock = store.lock().unwrap();
    lock.sweep();
    super::fs::unsettled(&store.state_dir.join("certs"));
    drop(lock);
    assert_eq!(fs::read_to_string(&lock_file).unwrap().lines().nth(1), None);
    super::fs::settled(&store.state_dir.join("certs"));

    // A failed write counts too: the state's name is taken by a directory, so its rename fails.
    let mut lock = store.lock().unwrap();
    lock.sweep();
    fs::create_dir(store.state_dir.join("certs/b.example.com.json")).unwrap();
    fs::write(store.state_dir.join("certs/b.example.com.json/x"), "").unwrap();
    assert!(
        store
            .save(&CertState {
                name: "b.example.com".into(),
                ..CertState::default()
            })
            .is_err()
    );
    drop(lock);
    assert_eq!(fs::read_to_string(&lock_file).unwrap().lines().nth(1), None);
    let lock = store.lock().unwrap();
    assert!(!lock.found_clean(), "a run that failed a write did not end cleanly");
    drop(lock);
    fs::remove_dir_all(root).unwrap();
}

/// A look at every certificate reads the same state and finds the same key through the
/// directories it opened once as through the full paths.
#[test]
fn a_look_through_the_opened_directories_reads_what_the_paths_read() {
    let (store, root) = temp_store("look");
    let st = CertState {
        name: "a.example.com".into(),
        serial: Some("0a".into()),
        ..CertState::default()
    };
    store.save(&st).unwrap();
    let look = store.look().unwrap();
    let through = store.load_from(Some(&look), "a.example.com").unwrap();
    assert_eq!(through.serial.as_deref(), Some("0a"));
    assert_eq!(
        serde_json::to_string(&through).unwrap(),
        serde_json::to_string(&store.load("a.example.com").unwrap()).unwrap()
    );
    // A certificate never saved is a fresh state either way.
    assert_eq!(
        store.load_from(Some(&look), "b.example.com").unwrap().name,
        "b.example.com"
    );
    // The live key, through the live link: left alone as configured, changed when it is not.
    let g = store
        .write_generation("a.example.com", "KEY", "CERT", &[], KeyAccess::default())
        .unwrap();
    store.switch("a.example.com", g.number).unwrap();
    let key = g.dir.join(files::KEY);
    assert!(
        !store
            .apply_key_access(Some(&look), "a.example.com", KeyAccess::default())
            .unwrap()
    );
    let group_reads = KeyAccess {
        mode: 0o640,
        ..KeyAccess::default()
    };
    assert!(
        store
            .apply_key_access(Some(&look), "a.example.com", group_reads)
            .unwrap()
    );
    assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o7777, 0o640);
    assert!(
        !store
            .apply_key_access(Some(&look), "a.example.com", group_reads)
            .unwrap()
    );
    assert!(!store.apply_key_access(None, "a.example.com", group_reads).unwrap());
    assert!(
        store
            .apply_key_access(None, "a.example.com", KeyAccess::default())
            .unwrap()
    );
    fs::remove_dir_all(root).unwrap();
}
