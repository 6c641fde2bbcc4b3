//! What sealing costs, measured side by side in one run (the machine is shared: read the ratios).
//!
//! 1. The async writer into SQLite, with and without seals: rounds alternate, each round records
//!    the same accesses through a fresh auditor and waits for the shutdown flush; it prints
//!    documents per second for both and the ratio.
//!    A third arm signs the seals (and their checkpoints), as a trail with witnesses does.
//! 2. `verify` over a signed SQLite trail, opened read-only as `audit verify` opens it: records
//!    per second (every row re-hashed with its salt, each of its indexed copies checked against
//!    its bytes, each stream's Merkle tree rebuilt, the checkpoints published held against it).
//! 3. Receipts on that trail: the time to make one (`seal::prove`, O(log n) seal reads), its size,
//!    and the time to check it with the public key alone.
//!
//! `cargo bench -p audit-runtime --bench seal` (`SEAL_BENCH_RECORDS` sets the trail's size).

use audit_runtime::seal::{self, VerifyOptions};
use audit_runtime::{Access, AccessUser, AccessView, AuditConfig, Auditor, DbConnection};
use std::time::{Duration, Instant};

fn access(i: usize) -> Access {
    let mut a = Access::new(
        format!("/polls/{}/vote", i % 500),
        chrono::Utc::now() - chrono::Duration::hours(1),
        AccessView::new("demo::views::vote", "demo", "vote"),
    );
    a.user = Some(AccessUser::new((i % 1000) as i64, "bench-user"));
    for h in 0..12 {
        a.request
            .METADATA
            .insert(format!("HTTP_X_HEADER_{h}"), "x".repeat(60));
    }
    a
}

async fn write_trail(
    dir: &std::path::Path,
    n: usize,
    sealed: bool,
    key: Option<&std::path::Path>,
) -> Duration {
    let db = dir.join(format!("audit-{}.db", bson::oid::ObjectId::new()));
    let mut toml = format!("run_async = true\nseal = {sealed}");
    if let Some(k) = key {
        toml.push_str(&format!("\nseal_key_file = {:?}", k.display().to_string()));
    }
    let config = AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new())
        .unwrap()
        .with_connection(DbConnection::Sqlite(db));
    let accesses: Vec<Access> = (0..n).map(access).collect();
    let (auditor, guard) = Auditor::start(config).await.unwrap();
    let started = Instant::now();
    for a in accesses {
        auditor.record_access(a).await;
    }
    let m = guard.shutdown().await;
    let took = started.elapsed();
    assert_eq!(m.written as usize, n);
    assert_eq!(m.seals > 0, sealed);
    took
}

fn main() {
    // `cargo test --all-targets` runs benches too, without `--bench` and in debug: then a small
    // trail only checks that everything runs.
    let measuring = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("SEAL_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if measuring { 100_000 } else { 2_000 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("seal.key");
    seal::keygen(&key).unwrap();
    rt.block_on(async {
        let per_round = (n / 5).max(400);
        let (mut with, mut without, mut signed) = (Vec::new(), Vec::new(), Vec::new());
        write_trail(dir.path(), per_round / 10, true, None).await; // warm-up
        // SEAL_BENCH_ROUNDS=0 skips the writer's rounds (to look at verify and receipts alone).
        let rounds: usize = std::env::var("SEAL_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5);
        for _ in 0..rounds {
            without.push(write_trail(dir.path(), per_round, false, None).await);
            with.push(write_trail(dir.path(), per_round, true, None).await);
            signed.push(write_trail(dir.path(), per_round, true, Some(&key)).await);
        }
        let median = |v: &mut Vec<Duration>| {
            v.sort();
            v[v.len() / 2]
        };
        let rate = |d: Duration| per_round as f64 / d.as_secs_f64();
        if rounds > 0 {
            let (w, wo, ws) = (
                median(&mut with),
                median(&mut without),
                median(&mut signed),
            );
            println!(
            "async writer, SQLite, {per_round} accesses per round, 5 rounds each, median: \
             without seals {:.0} docs/s, with seals {:.0} docs/s (ratio {:.3}), with signed \
             seals and checkpoints {:.0} docs/s (ratio {:.3})",
            rate(wo),
            rate(w),
            rate(w) / rate(wo),
            rate(ws),
            rate(ws) / rate(wo)
        );
        }

        // The CPU of sealing one record, and the share of it the Merkle tree takes: covering
        // 512 stored accesses (salt, commitment) and preparing their signed seal, against
        // appending their 512 leaves to a tree.
        let signing = seal::load_signing_key(&key).unwrap();
        let docs: Vec<bson::RawDocumentBuf> = (0..512)
            .map(|i| bson::RawDocumentBuf::from_document(&bson::to_document(&access(i)).unwrap()).unwrap())
            .collect();
        let sealer = seal::Sealer::new(bson::oid::ObjectId::new(), Some(signing));
        let reps = if measuring { 200 } else { 2 };
        let started = Instant::now();
        for _ in 0..reps {
            let covered: Vec<seal::Covered> = docs
                .iter()
                .map(|d| sealer.cover(audit_runtime::Collection::Access, d))
                .collect();
            std::hint::black_box(sealer.prepare_batch(None, &covered));
        }
        let sealing = started.elapsed().as_secs_f64() / (reps * 512) as f64;
        let started = Instant::now();
        for r in 0..reps {
            let mut tree = seal::merkle::Frontier::new();
            let mut nodes = Vec::new();
            for i in 0..512u32 {
                let leaf = seal::merkle::leaf_hash(&(r as u32 * 512 + i).to_le_bytes());
                tree.push(leaf, &mut |n| nodes.extend_from_slice(&n));
            }
            std::hint::black_box((tree.root(), nodes));
        }
        let tree = started.elapsed().as_secs_f64() / (reps * 512) as f64;
        println!(
            "sealing CPU per record (batches of 512, signed): {:.2} us, of which the Merkle tree \
             {:.3} us ({:.1}%)",
            sealing * 1e6,
            tree * 1e6,
            100.0 * tree / sealing
        );

        // A signed trail of n records, its checkpoints published to a file, then verify it.
        let db = dir.path().join("verify.db");
        let checkpoints = dir.path().join("verify.checkpoints");
        let toml = format!(
            "run_async = true\nseal_key_file = {:?}\ncheckpoint_file = {:?}",
            key.display().to_string(),
            checkpoints.display().to_string()
        );
        let config = AuditConfig::from_sources(Some(&toml), Vec::<(String, String)>::new())
            .unwrap()
            .with_connection(DbConnection::Sqlite(db.clone()));
        let (auditor, guard) = Auditor::start(config).await.unwrap();
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let a = access(i);
            ids.push(a.id);
            auditor.record_access(a).await;
        }
        guard.shutdown().await;
        let public = seal::load_verifying_key(&seal::public_key_path(&key)).unwrap();
        let published = seal::read_checkpoints(
            &std::fs::read_to_string(&checkpoints).unwrap(),
            Some(&public),
        )
        .unwrap();
        // As `audit verify` opens it: read-only.
        let store = audit_runtime::Store::open_read_only(&DbConnection::Sqlite(db))
            .await
            .unwrap();
        let started = Instant::now();
        let plain = seal::verify(&store, &VerifyOptions::default(), |_| {}, |_| {})
            .await
            .unwrap();
        println!(
            "verify, SQLite, no key, no checkpoints: {} records: {:.2} s, {:.0} records/s",
            plain.records,
            started.elapsed().as_secs_f64(),
            plain.records as f64 / started.elapsed().as_secs_f64()
        );
        let mut opts = VerifyOptions::default();
        opts.key = Some(public);
        opts.checkpoints = published.clone();
        let started = Instant::now();
        let mut findings = 0;
        let summary = seal::verify(&store, &opts, |_| findings += 1, |_| {})
            .await
            .unwrap();
        let took = started.elapsed();
        assert_eq!(findings, 0);
        println!(
            "verify, SQLite, signed, {} checkpoints: {} records in {} seals: {:.2} s, {:.0} records/s",
            published.len(),
            summary.records,
            summary.seals,
            took.as_secs_f64(),
            summary.records as f64 / took.as_secs_f64()
        );

        // Receipts for records spread over the trail.
        let picks: Vec<_> = (0..50).map(|k| ids[(k * 7919) % n]).collect();
        let (mut prove_times, mut check_times, mut sizes) = (Vec::new(), Vec::new(), Vec::new());
        for id in picks {
            let started = Instant::now();
            let receipt = seal::prove(&store, id, None).await.unwrap();
            prove_times.push(started.elapsed());
            let text = receipt.to_text();
            sizes.push(text.len());
            let started = Instant::now();
            seal::check_receipt(&text, &public).unwrap();
            check_times.push(started.elapsed());
        }
        let hashes = seal::merkle::inclusion_ranges(0, summary.records).len();
        sizes.sort();
        println!(
            "receipts, tree of {} records: {hashes} proof hashes, {} bytes (median, record \
             included); prove {:.2} ms, check {:.3} ms (medians of 50)",
            summary.records,
            sizes[sizes.len() / 2],
            median(&mut prove_times).as_secs_f64() * 1e3,
            median(&mut check_times).as_secs_f64() * 1e3,
        );
    });
}
