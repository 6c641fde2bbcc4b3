//! What the SeaORM hooks cost per save, measured side by side in one run (the machine is shared:
//! read the ratios).
//!
//! Two tables of the same shape in one SQLite file, one entity with the hooks and one without.
//! Each save is an `ActiveModel::update` that sets one field of an existing row, so the audited
//! one pays for what the hooks add: the `SELECT` of the old row in `before_save`, the snapshots
//! and the diff, and queueing the action (the writer is asynchronous, and flushed outside the
//! timings). A third variant, the plain save preceded by the same `SELECT` by hand, tells how much
//! of the difference is that query. Rounds alternate:
//!
//! 1. autocommit: every save is its own transaction (each commit waits for the disk);
//! 2. one transaction per round (`sea_orm::transaction` for the audited saves, SeaORM's own for
//!    the plain ones), where the statements themselves dominate.
//!
//! `cargo bench -p audit-runtime --features sea-orm --bench sea_orm` (`SEA_ORM_BENCH_SAVES` sets the
//! saves per round).

use audit_runtime::{AuditConfig, Auditor, Collection, DbConnection, Filter};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbErr,
    EntityTrait, Schema, Set, TransactionTrait,
};
use std::time::{Duration, Instant};

#[allow(unreachable_pub)] // SeaORM's entity items are `pub` by convention.
mod audited {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, audit_runtime::Audited)]
    #[sea_orm(table_name = "audited_poll")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub question: String,
        pub votes: i64,
        pub closed: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {
        audit_runtime::sea_orm::audit_hooks!();
    }
}

#[allow(unreachable_pub)]
mod plain {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "plain_poll")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub question: String,
        pub votes: i64,
        pub closed: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Rows per table: saves go round them.
const ROWS: i64 = 100;

async fn setup(db: &DatabaseConnection) {
    let schema = Schema::new(db.get_database_backend());
    db.execute(&schema.create_table_from_entity(audited::Entity))
        .await
        .unwrap();
    db.execute(&schema.create_table_from_entity(plain::Entity))
        .await
        .unwrap();
    for id in 1..=ROWS {
        let question = format!("Question number {id}?");
        audited::Entity::insert(audited::ActiveModel {
            id: Set(id),
            question: Set(question.clone()),
            votes: Set(0),
            closed: Set(false),
        })
        .exec(db)
        .await
        .unwrap();
        plain::Entity::insert(plain::ActiveModel {
            id: Set(id),
            question: Set(question),
            votes: Set(0),
            closed: Set(false),
        })
        .exec(db)
        .await
        .unwrap();
    }
}

/// `n` saves of one field on `db`; `votes` counts up from `from`, so every save changes the row.
async fn save_audited<C: ConnectionTrait>(db: &C, n: usize, from: i64) -> Result<(), DbErr> {
    for i in 0..n as i64 {
        audited::ActiveModel {
            id: Set(i % ROWS + 1),
            votes: Set(from + i),
            ..Default::default()
        }
        .update(db)
        .await?;
    }
    Ok(())
}

async fn save_plain<C: ConnectionTrait>(db: &C, n: usize, from: i64) -> Result<(), DbErr> {
    for i in 0..n as i64 {
        plain::ActiveModel {
            id: Set(i % ROWS + 1),
            votes: Set(from + i),
            ..Default::default()
        }
        .update(db)
        .await?;
    }
    Ok(())
}

/// The plain saves, each after a `SELECT` of its row: the query the hooks add, without the rest.
async fn save_plain_loading<C: ConnectionTrait>(db: &C, n: usize, from: i64) -> Result<(), DbErr> {
    for i in 0..n as i64 {
        let id = i % ROWS + 1;
        plain::Entity::find_by_id(id).one(db).await?;
        plain::ActiveModel {
            id: Set(id),
            votes: Set(from + i),
            ..Default::default()
        }
        .update(db)
        .await?;
    }
    Ok(())
}

#[derive(Default)]
struct Timings {
    plain_auto: Vec<Duration>,
    loading_auto: Vec<Duration>,
    audited_auto: Vec<Duration>,
    plain_txn: Vec<Duration>,
    loading_txn: Vec<Duration>,
    audited_txn: Vec<Duration>,
}

async fn round(db: &DatabaseConnection, auditor: &Auditor, n: usize, from: i64, t: &mut Timings) {
    let started = Instant::now();
    save_plain(db, n, from).await.unwrap();
    t.plain_auto.push(started.elapsed());

    let started = Instant::now();
    save_plain_loading(db, n, from).await.unwrap();
    t.loading_auto.push(started.elapsed());

    let started = Instant::now();
    save_audited(db, n, from).await.unwrap();
    t.audited_auto.push(started.elapsed());
    auditor.flush().await;

    let started = Instant::now();
    let txn: DatabaseTransaction = db.begin().await.unwrap();
    save_plain(&txn, n, from + n as i64).await.unwrap();
    txn.commit().await.unwrap();
    t.plain_txn.push(started.elapsed());

    let started = Instant::now();
    let txn: DatabaseTransaction = db.begin().await.unwrap();
    save_plain_loading(&txn, n, from + n as i64).await.unwrap();
    txn.commit().await.unwrap();
    t.loading_txn.push(started.elapsed());

    let started = Instant::now();
    audit_runtime::sea_orm::transaction(db, |txn| {
        Box::pin(async move { save_audited(txn, n, from + n as i64).await })
    })
    .await
    .unwrap();
    t.audited_txn.push(started.elapsed());
    auditor.flush().await;
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo test --all-targets` runs benches too, without `--bench` and in debug: then a few
    // saves only check that everything runs and every audited save is recorded.
    let measuring = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("SEA_ORM_BENCH_SAVES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if measuring { 2_000 } else { 50 });
    let rounds = if measuring { 5 } else { 1 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("app.db").display());
        let db = Database::connect(&url).await.unwrap();
        setup(&db).await;
        let config =
            AuditConfig::from_sources(Some("run_async = true"), Vec::<(String, String)>::new())
                .unwrap()
                .with_connection(DbConnection::Sqlite(dir.path().join("audit.db")));
        let (auditor, guard) = Auditor::start(config).await.unwrap();
        // Outside any request, the hooks record through the global auditor.
        auditor.install_global();

        let mut t = Timings::default();
        round(&db, &auditor, n / 10 + 1, 1, &mut Timings::default()).await; // warm-up
        let mut from = 1_000_000;
        for _ in 0..rounds {
            round(&db, &auditor, n, from, &mut t).await;
            from += 2 * n as i64;
        }
        let recorded = auditor
            .store()
            .unwrap()
            .count(Collection::ModelAction, &Filter::all())
            .await
            .unwrap();
        let expected = 2 * (n / 10 + 1) + 2 * rounds * n;
        assert_eq!(
            recorded as usize, expected,
            "every audited save is recorded"
        );

        let per_save = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
        for (name, plain, loading, audited) in [
            (
                "autocommit",
                &mut t.plain_auto,
                &mut t.loading_auto,
                &mut t.audited_auto,
            ),
            (
                "one transaction",
                &mut t.plain_txn,
                &mut t.loading_txn,
                &mut t.audited_txn,
            ),
        ] {
            let (p, l, a) = (median(plain), median(loading), median(audited));
            println!(
                "SeaORM update of one field, SQLite, {name}, {n} saves per round, {rounds} rounds, \
                 median: plain {:.1} µs/save, plain after a SELECT {:.1} µs/save, audited {:.1} \
                 µs/save (+{:.1} µs), ratio {:.2} (to the plain save after a SELECT: {:.2})",
                per_save(p),
                per_save(l),
                per_save(a),
                per_save(a) - per_save(p),
                a.as_secs_f64() / p.as_secs_f64(),
                a.as_secs_f64() / l.as_secs_f64()
            );
        }
        guard.shutdown().await;
    });
}
