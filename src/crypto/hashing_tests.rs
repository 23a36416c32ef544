//! Tests of the code hashing: PHC strings, argon2id and HMAC-SHA256 forms, switches between
//! them, shared salts of a key, and overload.
use super::*;
use sha2::Digest;

#[test]
fn phc_strings_round_trip_in_the_format_stored_before() {
    let params = Params::new(4096, 1, 1, Some(OUTPUT_LEN)).unwrap();
    let (salt, out) = ([7u8; SALT_LEN], [9u8; OUTPUT_LEN]);
    let phc = phc_string(&params, &salt, &out).unwrap();
    // The format the hand-written encoder produced (rows stored before must parse).
    let before = format!(
        "$argon2id$v=19$m=4096,t=1,p=1${}${}",
        B64.encode(salt),
        B64.encode(out)
    );
    assert_eq!(phc, before);
    let (p, s, h) = parse_phc(&before).unwrap();
    assert_eq!((p.m_cost(), p.t_cost(), p.p_cost()), (4096, 1, 1));
    assert_eq!((s.as_slice(), h.as_slice()), (&salt[..], &out[..]));
    for bad in [
        "",
        "$argon2i$v=19$m=8,t=1,p=1$AAAAAAAAAAA$AAAAAAAAAAA",
        "$argon2id$v=16$m=8,t=1,p=1$AAAA$AAAA",
        "$argon2id$v=19$m=8,t=1,p=1",
    ] {
        assert!(parse_phc(bad).is_err(), "{bad}");
    }
}

fn settings(max_queue: usize) -> HashingSettings {
    HashingSettings {
        algorithm: HashAlgorithm::Argon2id,
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
        max_concurrent: 1,
        max_queue,
    }
}

#[tokio::test]
async fn hash_verifies_only_with_the_same_code_and_pepper() {
    let h = Hasher::new(&settings(0), 2, &[1u8; 32]).unwrap();
    let phc = h.hash("123456").await.unwrap();
    assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
    assert!(!phc.contains("123456"));
    assert!(h
        .verify_stored(h.slot().unwrap(), "123456", &phc)
        .await
        .unwrap());
    assert!(!h
        .verify_stored(h.slot().unwrap(), "123457", &phc)
        .await
        .unwrap());
    let other = Hasher::new(&settings(0), 1, &[2u8; 32]).unwrap();
    assert!(!other
        .verify_stored(other.slot().unwrap(), "123456", &phc)
        .await
        .unwrap());
}

#[tokio::test]
async fn a_keys_codes_share_its_salt_and_any_of_them_verifies() {
    let h = Hasher::new(&settings(0), 2, &[1u8; 32]).unwrap();
    let first = h.hash("111111").await.unwrap();
    let second = h.hash_like("222222", &first).await.unwrap();
    let salt = |p: &str| parse_phc(p).unwrap().1;
    assert_eq!(salt(&first), salt(&second));
    assert_ne!(first, second);
    let key = vec![second.clone(), first.clone()];
    for (code, ok) in [("111111", true), ("222222", true), ("333333", false)] {
        let got = h.verify_any(h.slot().unwrap(), code, &key).await.unwrap();
        assert_eq!(got, ok, "{code}");
    }
    // A key's hashes of one salt are compared after one computation: the check of the
    // second reuses the first's output.
    let checks: Vec<Check> = key.iter().map(|s| check_of("1", s).unwrap()).collect();
    assert!(checks[0].same_input(&checks[1]));
    let elsewhere = check_of("1", &h.hash("111111").await.unwrap()).unwrap();
    assert!(!checks[0].same_input(&elsewhere), "another salt");
}

#[tokio::test]
async fn hmac_codes_name_their_algorithm_and_both_kinds_verify_after_a_switch() {
    let pepper = [3u8; 32];
    let argon = Hasher::new(&settings(0), 1, &pepper).unwrap();
    let hmac_settings = HashingSettings {
        algorithm: HashAlgorithm::HmacSha256,
        ..settings(0)
    };
    let hm = Hasher::new(&hmac_settings, 1, &pepper).unwrap();
    let stored_hmac = hm.hash("123456").await.unwrap();
    assert!(
        stored_hmac.starts_with("$hmac-sha256$v=1$"),
        "{stored_hmac}"
    );
    assert!(!stored_hmac.contains("123456"));
    let stored_argon = argon.hash("123456").await.unwrap();
    // Each hasher verifies both forms (a switch either way), and a wrong code fails.
    for h in [&argon, &hm] {
        for stored in [&stored_hmac, &stored_argon] {
            assert!(h
                .verify_stored(h.slot().unwrap(), "123456", stored)
                .await
                .unwrap());
            assert!(!h
                .verify_stored(h.slot().unwrap(), "654321", stored)
                .await
                .unwrap());
        }
    }
    // A fresh salt per key; a resent code keeps its key's salt and algorithm.
    assert_ne!(stored_hmac, hm.hash("123456").await.unwrap());
    let resent = argon.hash_like("222222", &stored_hmac).await.unwrap();
    assert!(resent.starts_with("$hmac-sha256$v=1$"));
    assert_eq!(
        parse_hmac(&resent).unwrap().unwrap().0,
        parse_hmac(&stored_hmac).unwrap().unwrap().0
    );
    let key = vec![stored_hmac.clone(), resent];
    assert!(hm
        .verify_any(hm.slot().unwrap(), "222222", &key)
        .await
        .unwrap());
    // The key comes from the pepper: another pepper verifies nothing.
    let other = Hasher::new(&hmac_settings, 1, &[4u8; 32]).unwrap();
    assert!(!other
        .verify_stored(other.slot().unwrap(), "123456", &stored_hmac)
        .await
        .unwrap());
    // HKDF with its own label: the key is neither the pepper nor a plain hash of it.
    assert_ne!(hmac_key_of(&pepper).unwrap(), pepper);
    // Imported OtpMint hashes wrap under the HMAC too.
    let wrapped = hm
        .wrap_legacy_sha256("salt", &hex::encode(sha2::Sha256::digest(b"salt111111")))
        .await
        .unwrap();
    assert!(hm
        .verify_stored(hm.slot().unwrap(), "111111", &wrapped)
        .await
        .unwrap());
    assert!(argon
        .verify_stored(argon.slot().unwrap(), "111111", &wrapped)
        .await
        .unwrap());
    assert!(!hm
        .verify_stored(hm.slot().unwrap(), "111112", &wrapped)
        .await
        .unwrap());
    for bad in [
        "$hmac-sha256$v=1$AAAA",
        "$hmac-sha256$v=1$AAAA$AAAA",
        "$hmac-sha256$v=1$!!$!!",
    ] {
        assert!(
            hm.verify_stored(hm.slot().unwrap(), "1", bad)
                .await
                .is_err(),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn a_full_queue_answers_overloaded() {
    let h = Hasher::new(
        &HashingSettings {
            memory_kib: 65536,
            iterations: 4,
            ..settings(1)
        },
        1,
        &[1u8; 32],
    )
    .unwrap();
    let jobs: Vec<_> = (0..8).map(|_| h.hash("123456")).collect();
    let results = futures_util::future::join_all(jobs).await;
    assert!(results
        .iter()
        .any(|r| matches!(r, Err(HashError::Overloaded))));
    assert!(results.iter().any(|r| r.is_ok()));
}

/// The pool's queue hands jobs out tenant by tenant in turn: one tenant's job queued behind
/// another's many waits for one of them, not for all (found by the noisy-neighbour audit).
#[test]
fn jobs_are_taken_tenant_by_tenant_in_turn() {
    let q = Queue {
        state: Mutex::new(QueueState::default()),
        ready: Condvar::new(),
    };
    let ran = Arc::new(Mutex::new(Vec::new()));
    let job = |name: &'static str| -> Job {
        let ran = Arc::clone(&ran);
        Box::new(move |_| ran.lock().unwrap().push(name))
    };
    let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) =
        (Arc::from("a"), Arc::from("b"), Arc::from("c"));
    for name in ["a0", "a1", "a2", "a3"] {
        q.push(Arc::clone(&a), job(name));
    }
    q.push(Arc::clone(&b), job("b0"));
    q.push(Arc::clone(&a), job("a4"));
    q.push(Arc::clone(&c), job("c0"));
    q.push(Arc::clone(&b), job("b1"));
    q.close();
    let mut memory = Vec::new();
    while let Some(j) = q.next() {
        j(&mut memory);
    }
    assert_eq!(
        *ran.lock().unwrap(),
        ["a0", "b0", "c0", "a1", "b1", "a2", "a3", "a4"]
    );
}

/// A tenant fills at most the places `hashing.max_queue` sets (threads + queue): a quarter
/// more are kept for the others, which still find one when it is at its share; a lone
/// tenant keeps every place it had.
#[test]
fn a_tenant_at_its_share_leaves_places_to_the_others() {
    let h = Hasher::new(&settings(3), 1, &[1u8; 32]).unwrap();
    // 1 thread + 3 queued = 4 places a tenant; 1 more for the others.
    let held: Vec<_> = (0..4).map(|_| h.slot_for("a").unwrap()).collect();
    assert!(matches!(h.slot_for("a"), Err(HashError::Overloaded)));
    let b = h.slot_for("b").unwrap();
    assert!(
        matches!(h.slot_for("c"), Err(HashError::Overloaded)),
        "the pool is full"
    );
    drop(held);
    drop(b);
    assert!(h.slot_for("a").is_ok());
}
