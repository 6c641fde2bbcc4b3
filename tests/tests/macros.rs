//! Behaviour of `#[audited_view]`, `#[disable_audit]` and `#[derive(Audited)]` through a real
//! embedded store: standalone calls (no HTTP) record their own access through the global auditor.

use audit_runtime::registry::{self, RegistryError};
use audit_runtime::{audited_view, disable_audit, Access, Audited, ModelAction, UrlMatch};
use audit_tests::global_auditor;
use bson::{doc, Bson};
use std::fmt;

async fn accesses_of(full_name: &str) -> Vec<Access> {
    let auditor = global_auditor();
    auditor.flush().await;
    Access::objects()
        .filter_by_view(full_name)
        .fetch(auditor.store().unwrap())
        .await
        .unwrap()
}

mod jobs {
    use super::*;

    #[audited_view(args(n, label))]
    pub fn sync_job(n: u32, label: &str, secret: &str) -> u32 {
        let _ = secret;
        n + label.len() as u32
    }

    #[audited_view(app = "billing", name = "nightly")]
    pub async fn async_job(n: u64) -> u64 {
        tokio::task::yield_now().await;
        n * 2
    }

    #[derive(Debug)]
    pub(crate) struct Inner;
    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("disk full")
        }
    }
    impl std::error::Error for Inner {}

    #[derive(Debug)]
    pub(crate) struct JobError(pub(crate) Inner);
    impl fmt::Display for JobError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("job failed")
        }
    }
    impl std::error::Error for JobError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[audited_view]
    pub fn failing_job(fail: bool) -> Result<u8, JobError> {
        if fail {
            return Err(JobError(Inner));
        }
        Ok(1)
    }

    #[audited_view]
    pub async fn question_mark(input: &str) -> Result<i64, std::num::ParseIntError> {
        let n: i64 = input.parse()?;
        Ok(n)
    }

    #[audited_view]
    pub fn early_return(x: i32) -> &'static str {
        if x > 0 {
            return "positive";
        }
        "other"
    }

    #[audited_view]
    pub fn panicking_job() -> u8 {
        panic!("intended panic");
    }

    #[audited_view]
    pub async fn panicking_async() -> u8 {
        tokio::task::yield_now().await;
        panic!("async panic {}", 42);
    }

    #[disable_audit]
    pub fn disabled_job() -> u8 {
        3
    }

    #[audited_view]
    #[disable_audit]
    pub fn both_outer_audited() -> u8 {
        4
    }

    #[disable_audit]
    #[audited_view]
    pub fn both_outer_disabled() -> u8 {
        5
    }

    pub(crate) struct Worker {
        pub(crate) base: u32,
    }

    impl Worker {
        #[audited_view(args(extra))]
        pub fn run(&self, extra: u32) -> u32 {
            self.base + extra
        }

        #[audited_view]
        pub async fn run_async(&mut self) -> u32 {
            self.base += 1;
            self.base
        }
    }

    pub(crate) struct Pair(pub(crate) u32, pub u32);

    #[audited_view(args(a, b))]
    pub fn destructured(Pair(a, b): Pair, (c, _d): (u8, u8)) -> u32 {
        a + b + c as u32
    }

    #[audited_view]
    pub fn generic<T: Clone + Into<u64>, I>(x: T, items: impl IntoIterator<Item = I>) -> u64
    where
        I: Into<u64>,
    {
        x.into() + items.into_iter().map(Into::into).sum::<u64>()
    }

    #[audited_view]
    pub fn returns_impl_trait(n: u32) -> impl Iterator<Item = u32> {
        0..n
    }

    #[audited_view]
    pub fn debug_error() -> Result<(), (u16, String)> {
        Err((418, "teapot".to_owned()))
    }

    // Each handler below is one whose path, as the compiler prints it, is not
    // `module::Type::function`: the stored name must not be that path with bits removed.

    pub(crate) struct Boxed<T>(pub(crate) T);

    impl<T: Copy> Boxed<T> {
        /// Printed `macros::jobs::Boxed<_>::get`.
        #[audited_view]
        pub fn get(&self) -> T {
            self.0
        }
    }

    pub(crate) trait Tick {
        fn tick(&self) -> u32;

        /// A trait's default method: named after the trait.
        #[audited_view]
        fn tick_twice(&self) -> u32 {
            self.tick() * 2
        }
    }

    impl Tick for Worker {
        /// Printed `<macros::jobs::Worker as macros::jobs::Tick>::tick`.
        #[audited_view]
        fn tick(&self) -> u32 {
            self.base
        }
    }

    impl Worker {
        /// An associated function without `self`.
        #[audited_view]
        pub async fn build() -> Worker {
            Worker { base: 1 }
        }
    }

    pub(crate) mod elsewhere {
        use audit_runtime::audited_view;

        impl super::Worker {
            /// An impl in another module than its type, printed
            /// `macros::jobs::elsewhere::<impl macros::jobs::Worker>::from_elsewhere`.
            #[audited_view]
            pub fn from_elsewhere(&self) -> u32 {
                self.base
            }
        }
    }

    /// Handlers declared in a closure and in an async block: neither appears in the name.
    pub(crate) fn in_closure() -> u8 {
        let f = || {
            #[audited_view]
            fn closure_inner() -> u8 {
                1
            }
            closure_inner()
        };
        f()
    }

    pub(crate) async fn in_async_block() -> u8 {
        async {
            #[audited_view]
            async fn async_inner() -> u8 {
                2
            }
            async_inner().await
        }
        .await
    }

    /// Arguments tell this test's calls apart from any other test's.
    #[audited_view(args(label))]
    pub fn standalone_probe(label: &str) -> usize {
        label.len()
    }

    /// A disabled function called outside any request calls an audited one.
    #[disable_audit]
    pub fn disabled_caller(label: &str) -> usize {
        standalone_probe(label)
    }

    /// Holds a large buffer across an await: its future is only as large as that if nothing in
    /// the wrapper boxes the body.
    #[audited_view]
    pub async fn large_state() -> u8 {
        let buffer = [3u8; 8192];
        tokio::task::yield_now().await;
        buffer[8191]
    }
}

/// Every test that calls `jobs::generic` holds this lock, so a count before and after one call
/// sees that call alone.
static GENERIC_CALLS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Accesses of `jobs::standalone_probe` called with `label`.
async fn probe_accesses(label: &str) -> Vec<Access> {
    accesses_of("macros::jobs::standalone_probe")
        .await
        .into_iter()
        .filter(|a| a.view.kwargs.get_str("label") == Ok(label))
        .collect()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", bson::oid::ObjectId::new().to_hex())
}

#[tokio::test]
async fn sync_function_records_view_named_args_times_and_outcome() {
    global_auditor(); // installed before the first audited call
    let before = chrono::Utc::now();
    assert_eq!(jobs::sync_job(2, "abc", "hunter2"), 5);
    let got = accesses_of("macros::jobs::sync_job").await;
    assert_eq!(got.len(), 1);
    let a = &got[0];
    assert_eq!(
        (a.view.app.as_str(), a.view.name.as_str()),
        ("macros", "sync_job")
    );
    assert_eq!(
        a.view.kwargs,
        doc! { "n": 2_i64, "label": "abc" },
        "only the named arguments, never `secret`"
    );
    assert_eq!(a.request.path, "");
    assert!(a.exception.is_none() && a.response.is_none());
    assert!(a.time.request >= before - chrono::Duration::milliseconds(1));
    assert!(a.time.response.unwrap() >= a.time.request);
    assert!(a.process.is_some(), "linked to the process");
}

#[tokio::test]
async fn async_function_with_overrides() {
    global_auditor(); // installed before the first audited call
    assert_eq!(jobs::async_job(21).await, 42);
    let store = global_auditor().store().unwrap();
    global_auditor().flush().await;
    let all: Vec<String> = Access::objects()
        .view_app("billing")
        .fetch(store)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.view.full_name)
        .collect();
    let got = accesses_of("macros::jobs::async_job").await;
    assert_eq!(got.len(), 1, "{all:?}");
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].view.app.as_str(), got[0].view.name.as_str()),
        ("billing", "nightly")
    );
}

#[tokio::test]
async fn errors_become_the_exception_with_type_path_and_source_chain() {
    global_auditor(); // installed before the first audited call
    assert!(jobs::failing_job(true).is_err());
    assert!(jobs::failing_job(false).is_ok());
    let got = accesses_of("macros::jobs::failing_job").await;
    assert_eq!(got.len(), 2);
    let e = got
        .iter()
        .find_map(|a| a.exception.clone())
        .expect("one exception");
    assert_eq!(e.kind, "macros::jobs::JobError");
    assert_eq!(e.message, "job failed");
    assert_eq!(e.trace, "caused by: disk full");
    assert_eq!(got.iter().filter(|a| a.exception.is_none()).count(), 1);
}

#[tokio::test]
async fn question_mark_and_early_return_are_seen() {
    global_auditor(); // installed before the first audited call
    assert!(jobs::question_mark("x").await.is_err());
    assert_eq!(jobs::question_mark("12").await.unwrap(), 12);
    let got = accesses_of("macros::jobs::question_mark").await;
    let kinds: Vec<_> = got
        .iter()
        .map(|a| a.exception.as_ref().map(|e| e.kind.clone()))
        .collect();
    assert!(
        kinds.contains(&Some("core::num::error::ParseIntError".to_owned())),
        "{kinds:?}"
    );
    assert!(kinds.contains(&None));
    assert_eq!(jobs::early_return(1), "positive");
    assert_eq!(jobs::early_return(-1), "other");
    assert_eq!(accesses_of("macros::jobs::early_return").await.len(), 2);
    assert!(jobs::debug_error().is_err());
    let e = accesses_of("macros::jobs::debug_error").await[0]
        .exception
        .clone()
        .unwrap();
    assert_eq!(e.message, "(418, \"teapot\")");
}

#[tokio::test]
async fn panics_are_recorded_then_resumed() {
    global_auditor(); // installed before the first audited call
    let caught = std::panic::catch_unwind(jobs::panicking_job);
    let payload = caught.expect_err("the panic reaches the caller");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"intended panic"));
    let got = accesses_of("macros::jobs::panicking_job").await;
    let e = got[0].exception.clone().unwrap();
    assert_eq!(
        (e.kind.as_str(), e.message.as_str()),
        ("panic", "intended panic")
    );
    assert!(e.trace.contains("panicking_job"), "backtrace: {}", e.trace);

    let joined = tokio::spawn(jobs::panicking_async()).await;
    assert!(joined.unwrap_err().is_panic());
    let got = accesses_of("macros::jobs::panicking_async").await;
    assert_eq!(got[0].exception.as_ref().unwrap().message, "async panic 42");
}

#[tokio::test]
async fn disabled_handlers_record_nothing_in_either_order() {
    global_auditor(); // installed before the first audited call
    assert_eq!(jobs::disabled_job(), 3);
    assert_eq!(jobs::both_outer_audited(), 4);
    assert_eq!(jobs::both_outer_disabled(), 5);
    for name in ["disabled_job", "both_outer_audited", "both_outer_disabled"] {
        let full = format!("macros::jobs::{name}");
        assert!(accesses_of(&full).await.is_empty(), "{name} recorded");
        let reg = registry::get_view(&full).unwrap();
        assert!(!reg.audited, "{name} is registered as disabled");
        let regs: Vec<_> = registry::views()
            .into_iter()
            .filter(|v| v.full_name() == full)
            .collect();
        assert_eq!(regs.len(), 1, "{name} registered once");
    }
    let disabled: Vec<&str> = registry::disabled_views()
        .iter()
        .map(|v| v.full_name())
        .collect();
    assert!(disabled.contains(&"macros::jobs::disabled_job"));
}

#[tokio::test]
async fn methods_generics_and_patterns() {
    global_auditor(); // installed before the first audited call
    let mut w = jobs::Worker { base: 10 };
    assert_eq!(w.run(5), 15);
    assert_eq!(w.run_async().await, 11);
    let got = accesses_of("macros::jobs::Worker::run").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].view.name, "run");
    assert_eq!(got[0].view.kwargs, doc! { "extra": 5_i64 });
    assert_eq!(
        accesses_of("macros::jobs::Worker::run_async").await.len(),
        1
    );
    assert_eq!(jobs::destructured(jobs::Pair(1, 2), (3, 4)), 6);
    assert_eq!(
        accesses_of("macros::jobs::destructured").await[0]
            .view
            .kwargs,
        doc! { "a": 1_i64, "b": 2_i64 }
    );
    {
        let _only_caller = GENERIC_CALLS.lock().await;
        let before = accesses_of("macros::jobs::generic").await.len();
        assert_eq!(jobs::generic(1u8, vec![2u32, 3u32]), 6);
        let after = accesses_of("macros::jobs::generic").await.len();
        assert_eq!(
            after,
            before + 1,
            "this call of a generic handler is recorded"
        );
    }
    assert_eq!(jobs::returns_impl_trait(3).count(), 3);
}

fn assert_send<T: Send>(_: &T) {}

#[test]
fn async_handler_futures_stay_send() {
    let fut = jobs::async_job(1);
    assert_send(&fut);
    let mut w = jobs::Worker { base: 0 };
    let fut = w.run_async();
    assert_send(&fut);
}

#[test]
fn registry_lookups() {
    let v = registry::get_view("macros::jobs::sync_job").unwrap();
    assert!(v.audited);
    assert_eq!((v.app(), v.name()), ("macros", "sync_job"));
    assert_eq!(
        registry::get_view("nope::x").unwrap_err(),
        RegistryError::UnknownView("nope::x".into())
    );
    // Registrations from a second crate are found.
    assert!(
        registry::get_view("audit_tests::fixtures::shared_handler")
            .unwrap()
            .audited
    );
    assert!(
        !registry::get_view("audit_tests::fixtures::shared_disabled")
            .unwrap()
            .audited
    );
    assert_eq!(
        registry::get_model("audit_tests::fixtures::SharedModel")
            .unwrap()
            .name,
        "SharedModel"
    );
    assert_eq!(audit_tests::fixtures::shared_handler(), 7);
}

// ---- derive(Audited) ----

#[derive(Audited, Clone)]
#[audit(app = "polls")]
struct Poll {
    id: i64,
    question: String,
    published: chrono::DateTime<chrono::Utc>,
    price: rust_decimal::Decimal,
    exact_price: rust_decimal::Decimal,
    #[audit(display)]
    uuid: uuid::Uuid,
    password: String,
    #[audit(capture)]
    token_count: u32,
    #[audit(mask)]
    ssn: String,
    #[audit(skip)]
    #[allow(dead_code)]
    cache: Vec<u8>,
    #[audit(rename = "voteCount")]
    votes: Option<u32>,
    owner: Owner,
}

impl AsRef<str> for Poll {
    fn as_ref(&self) -> &str {
        &self.question
    }
}

impl fmt::Display for Poll {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.question)
    }
}

#[derive(Audited, Clone)]
struct Owner {
    #[audit(id)]
    login: String,
    name: String,
}

fn poll() -> Poll {
    use chrono::TimeZone;
    Poll {
        id: 1,
        question: "ñ Unicode test ñ 日本".into(),
        published: chrono::Utc.with_ymd_and_hms(2016, 1, 1, 13, 45, 0).unwrap(),
        price: "0.1".parse().unwrap(),
        exact_price: "12345678901234567890.123456789".parse().unwrap(),
        uuid: uuid::Uuid::nil(),
        password: "hunter2".into(),
        token_count: 3,
        ssn: "123-45-6789".into(),
        cache: vec![1, 2],
        votes: None,
        owner: Owner {
            login: "jo".into(),
            name: "José".into(),
        },
    }
}

#[test]
fn derive_identity_id_and_unicode_description() {
    assert_eq!(Poll::MODEL.full_name, "macros::Poll");
    assert_eq!((Poll::MODEL.app, Poll::MODEL.name), ("polls", "Poll"));
    assert_eq!(Owner::MODEL.app, "macros");
    let p = poll();
    assert_eq!(p.audit_id(), Some("1".into()));
    assert_eq!(
        p.audit_description(),
        "ñ Unicode test ñ 日本",
        "full Unicode"
    );
    assert_eq!(p.owner.audit_id(), Some("jo".into()));
    assert_eq!(
        p.owner.audit_description(),
        "Owner(jo)",
        "no Display: type and id"
    );
    let reg = registry::get_model("macros::Poll").unwrap();
    assert_eq!(
        reg.fields,
        [
            "id",
            "question",
            "published",
            "price",
            "exact_price",
            "uuid",
            "password",
            "token_count",
            "ssn",
            "voteCount",
            "owner"
        ]
    );
}

#[test]
fn derive_snapshot_keeps_types_and_masks_secrets() {
    let s = poll().audit_snapshot().into_document();
    assert_eq!(s.get("id"), Some(&Bson::Int64(1)));
    assert_eq!(s.get_str("question").unwrap(), "ñ Unicode test ñ 日本");
    let published = s.get_datetime("published").unwrap().to_chrono();
    assert_eq!(
        published.to_rfc3339(),
        "2016-01-01T13:45:00+00:00",
        "time of day kept"
    );
    assert_eq!(
        s.get_str("exact_price").unwrap(),
        "12345678901234567890.123456789",
        "no float loss"
    );
    assert_eq!(
        s.get_str("uuid").unwrap(),
        "00000000-0000-0000-0000-000000000000"
    );
    assert!(s.get("cache").is_none(), "skipped");
    assert_eq!(
        s.get("voteCount"),
        Some(&Bson::Null),
        "renamed, None kept as null"
    );
    assert_eq!(
        s.get("token_count"),
        Some(&Bson::Int64(3)),
        "capture overrides the secret-name rule"
    );
    assert_eq!(
        s.get_document("owner").unwrap(),
        &doc! { "login": "jo", "name": "José" }
    );
    for masked in ["password", "ssn"] {
        let v = s.get_str(masked).unwrap();
        assert!(
            !v.contains("hunter2") && !v.contains("6789"),
            "{masked} leaked: {v}"
        );
    }
}

#[test]
fn derive_diff_shows_masked_changes_without_values() {
    let old = poll();
    let mut new = old.clone();
    new.password = "correct horse".into();
    new.votes = Some(4);
    let mut changes =
        audit_runtime::internals::diff_snapshots(&old.audit_snapshot(), &new.audit_snapshot())
            .into_document();
    let by_documents = audit_runtime::internals::diff(
        &old.audit_snapshot().into_document(),
        &new.audit_snapshot().into_document(),
    );
    assert_eq!(
        changes, by_documents,
        "the positional diff agrees with the document diff"
    );
    audit_runtime::internals::finalize_masks(&mut changes);
    assert_eq!(
        changes,
        doc! {
            "password": { "old": "********", "new": "********" },
            "voteCount": { "old": Bson::Null, "new": 4_i64 },
        }
    );
    // Same values: no change, masked or not.
    assert!(
        audit_runtime::internals::diff_snapshots(&old.audit_snapshot(), &old.audit_snapshot())
            .is_empty()
    );
}

#[tokio::test]
async fn model_actions_follow_unregister_and_register() {
    global_auditor(); // installed before the first audited call
    let auditor = global_auditor();
    let store = auditor.store().unwrap();
    let p = poll();
    // Unregistered: nothing recorded, until it is registered again.
    registry::unregister::<Poll>();
    assert_eq!(auditor.record_create(&p).await, None);
    registry::register::<Poll>();
    registry::register::<Poll>();
    let created = auditor.record_create(&p).await.expect("recorded");
    let mut updated = p.clone();
    updated.question = "changed".into();
    auditor.record_update(&p, &updated).await.unwrap();
    auditor.record_delete(&updated).await.unwrap();
    auditor.flush().await;
    let actions = ModelAction::objects()
        .filter_by_model::<Poll>()
        .order_by("timestamp", audit_runtime::Order::Asc)
        .fetch(store)
        .await
        .unwrap();
    assert_eq!(actions.len(), 3);
    assert_eq!(actions[0].id, created);
    let kinds: Vec<_> = actions.iter().map(|a| a.action).collect();
    assert_eq!(
        kinds,
        [
            audit_runtime::Action::Create,
            audit_runtime::Action::Update,
            audit_runtime::Action::Delete
        ]
    );
    assert_eq!(actions[0].content.old, doc! {});
    assert_eq!(
        actions[0].content.changes.len(),
        actions[0].content.new.len()
    );
    assert_eq!(
        actions[0].content.new.get_str("password").unwrap(),
        "********",
        "masks are stored as the fixed mask"
    );
    assert_eq!(
        actions[1].content.changes.keys().collect::<Vec<_>>(),
        ["question"]
    );
    assert!(actions[2].content.new.is_empty());
    assert_eq!(actions[2].instance.description, "changed");
    assert!(
        actions.iter().all(|a| a.access.is_none()),
        "no request: no access"
    );
    assert!(actions.iter().all(|a| a.process.is_some()));
    assert!(actions[0].timestamp <= actions[2].timestamp);
    let by_instance = ModelAction::objects()
        .filter_by_instance(&p)
        .count(store)
        .await
        .unwrap();
    assert_eq!(by_instance, 3);
    registry::unregister::<Poll>();
    assert_eq!(auditor.record_create(&p).await, None);
}

#[test]
fn register_models_names_the_unknown_model() {
    let config = audit_runtime::AuditConfig::from_sources(
        Some("logged_models = ['macros::Owner', 'macros::Nope']"),
        Vec::<(String, String)>::new(),
    )
    .unwrap();
    let err = registry::register_models(&config).unwrap_err();
    assert_eq!(err.to_string(), "Model macros::Nope does not exist.");
    assert!(
        !registry::is_registered("macros::Owner"),
        "nothing registered when one name is unknown"
    );
    let ok = audit_runtime::AuditConfig::from_sources(
        Some("logged_models = ['macros::Owner']"),
        Vec::<(String, String)>::new(),
    )
    .unwrap();
    assert_eq!(registry::register_models(&ok).unwrap(), ["macros::Owner"]);
    assert!(registry::is_registered("macros::Owner"));
    registry::unregister_models(&ok);
    assert!(!registry::is_registered("macros::Owner"));
}

#[tokio::test]
async fn query_by_url_is_unaffected_by_standalone_records() {
    let auditor = global_auditor();
    let store = auditor.store().unwrap();
    // An access of an HTTP request, so the URL query has something to find.
    let path = format!("/{}", unique("url-probe"));
    store
        .insert(&audit_tests::access(
            &path,
            chrono::Utc::now(),
            "macros::http_view",
        ))
        .await
        .unwrap();
    // A standalone record, told apart by its argument.
    let label = unique("standalone");
    jobs::standalone_probe(&label);
    auditor.flush().await;
    let standalone = probe_accesses(&label).await;
    assert_eq!(standalone.len(), 1, "the standalone call is stored");
    assert_eq!(standalone[0].request.path, "", "with no request path");

    // Any path at all: the request's access is found, the standalone one is not.
    let by_url = Access::objects()
        .filter_by_url(UrlMatch::regex("."))
        .fetch(store)
        .await
        .unwrap();
    assert!(by_url.iter().any(|a| a.request.path == path), "{by_url:?}");
    assert!(
        by_url.iter().all(|a| a.id != standalone[0].id),
        "a standalone record answers a URL query"
    );
    let exact = Access::objects()
        .filter_by_url(UrlMatch::exact(path.as_str()))
        .fetch(store)
        .await
        .unwrap();
    assert_eq!(exact.len(), 1);
    assert_eq!(exact[0].view.full_name, "macros::http_view");
}

/// Names are `module::function` or `module::Type::function`, from `module_path!()` and the
/// item's name: the module of the `impl` block, the type's bare name (no generic arguments, not
/// the trait), never a closure or an async block. Each handler here is one whose path, as the
/// compiler prints it, spells something else.
#[tokio::test]
async fn names_are_built_from_module_type_and_function() {
    global_auditor(); // installed before the first audited call
    let w = jobs::Worker { base: 4 };
    assert_eq!(jobs::Boxed(9u8).get(), 9);
    assert_eq!(jobs::Tick::tick(&w), 4);
    assert_eq!(jobs::Tick::tick_twice(&w), 8);
    assert_eq!(jobs::Worker::build().await.base, 1);
    assert_eq!(w.from_elsewhere(), 4);
    assert_eq!(jobs::in_closure(), 1);
    assert_eq!(jobs::in_async_block().await, 2);
    for (name, short) in [
        ("macros::jobs::Boxed::get", "get"),
        ("macros::jobs::Worker::tick", "tick"),
        ("macros::jobs::Tick::tick_twice", "tick_twice"),
        ("macros::jobs::Worker::build", "build"),
        (
            "macros::jobs::elsewhere::Worker::from_elsewhere",
            "from_elsewhere",
        ),
        ("macros::jobs::in_closure::closure_inner", "closure_inner"),
        ("macros::jobs::in_async_block::async_inner", "async_inner"),
    ] {
        let got = accesses_of(name).await;
        assert_eq!(got.len(), 1, "{name} recorded once");
        assert_eq!(got[0].view.name, short);
        assert_eq!(got[0].view.app, "macros");
        assert!(
            registry::get_view(name).unwrap().audited,
            "{name} registered"
        );
    }
}

/// `#[disable_audit]` acts on the current request; outside any there is none, and an audited
/// function it calls records its own access as usual.
#[tokio::test]
async fn disabled_function_outside_a_request_leaves_audited_calls_alone() {
    global_auditor(); // installed before the first audited call
    let label = unique("under-disabled");
    assert_eq!(jobs::disabled_caller(&label), label.len());
    assert_eq!(probe_accesses(&label).await.len(), 1);
    assert!(accesses_of("macros::jobs::disabled_caller")
        .await
        .is_empty());
}

/// Nothing on an audited async handler's path is boxed: its future holds the body's state
/// inline.
#[tokio::test]
async fn async_handler_state_is_not_boxed() {
    global_auditor(); // installed before the first audited call
    let fut = jobs::large_state();
    assert!(
        std::mem::size_of_val(&fut) >= 8192,
        "{} bytes",
        std::mem::size_of_val(&fut)
    );
    assert_eq!(fut.await, 3);
}
