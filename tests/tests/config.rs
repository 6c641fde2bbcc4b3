//! Configuration and the blacklist: defaults, sources, URI construction, and
//! every invalid value rejected with a message naming the setting.

use audit_runtime::config::{parse_connection_str, MongoParts};
use audit_runtime::IndexSpec;
use audit_runtime::{AuditConfig, Blacklist, Collection, DbConnection, FullPolicy};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn cfg(toml: &str) -> Result<AuditConfig, String> {
    AuditConfig::from_sources(Some(toml), no_env()).map_err(|e| e.to_string())
}

fn env(pairs: &[(&str, &str)]) -> Result<AuditConfig, String> {
    AuditConfig::from_sources(
        None,
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
    .map_err(|e| e.to_string())
}

#[test]
fn defaults_are_the_documented_ones() {
    let c = AuditConfig::from_sources(None, no_env()).unwrap();
    assert!(c.activate, "activate defaults to true, as documented");
    assert_eq!(c.db_alias, "audit");
    assert_eq!(c.db_connection, DbConnection::Sqlite("audit.db".into()));
    assert!(!c.run_async);
    assert_eq!(c.queue_name, "audit");
    assert!(c.logged_models.is_empty() && c.blacklist.is_empty() && c.custom_provider.is_empty());
    assert!(!c.translate_urls);
    assert_eq!(c.full_policy, FullPolicy::Block);
    assert!(c.capture.redact);
}

#[test]
fn every_setting_reads_from_toml() {
    let c = cfg(r#"
        activate = false
        db_alias = "trail"
        db_connection = "mongodb://db.example:27018/trail_db"
        run_async = true
        queue_name = "q"
        logged_models = ["demo::Poll"]
        access_indexes = ["custom.polls.names", ["custom.polls.names", "custom.polls.num_polls"]]
        process_indexes = ["name"]
        model_action_indexes = [["-timestamp"]]
        translate_urls = true
        full_policy = "drop"
        queue_capacity = 10
        flush_timeout_ms = 250
        spill_path = "/var/audit/spill"
        quarantine_path = "/var/audit/quarantine"
        seal = false
        seal_key_file = "/etc/audit/seal.pem"
        seal_anchor_every = 7
        erase_fields = ["request.POST"]
        retention_days = 30
        queue_max_bytes = 4096
        [blacklist]
        "" = ["^/static/"]
        demo = ['^(?!(/access/|/modelaction/)).*$']
        [custom_provider]
        polls = "polls"
        [capture]
        redact = false
        redact_keys = ["favourite_colour"]
        redact_headers = ["X-Tenant"]
        unredact_keys = ["session"]
        unredact_headers = ["cookie"]
        max_body_bytes = 10
        max_exception_bytes = 20
        interlink_header = "X-Correlation-Id"
        default_app = "web"
    "#)
    .unwrap();
    assert!(!c.activate && c.run_async && c.translate_urls);
    assert_eq!(c.db_alias, "trail");
    assert_eq!(c.queue_name, "q");
    assert_eq!(
        c.db_connection,
        DbConnection::Mongo {
            uri: "mongodb://db.example:27018/trail_db".into(),
            database: "trail_db".into()
        }
    );
    assert_eq!(c.logged_models, ["demo::Poll"]);
    assert_eq!(
        c.access_indexes,
        vec![
            IndexSpec::from_fields(&["custom.polls.names"]),
            IndexSpec::from_fields(&["custom.polls.names", "custom.polls.num_polls"])
        ]
    );
    assert_eq!(
        c.model_action_indexes[0].keys,
        vec![("timestamp".to_owned(), -1)]
    );
    assert_eq!(
        c.indexes_for(Collection::Process).last().unwrap().name(),
        "name_1"
    );
    assert_eq!(
        c.custom_provider.get("polls").map(String::as_str),
        Some("polls")
    );
    assert_eq!(c.full_policy, FullPolicy::Drop);
    assert_eq!(c.queue_capacity, 10);
    assert_eq!(c.flush_timeout, std::time::Duration::from_millis(250));
    assert_eq!(c.spill_path.as_deref(), Some(Path::new("/var/audit/spill")));
    assert_eq!(
        c.quarantine_path.as_deref(),
        Some(Path::new("/var/audit/quarantine"))
    );
    assert!(!c.seal);
    assert_eq!(
        c.seal_key_file.as_deref(),
        Some(Path::new("/etc/audit/seal.pem"))
    );
    assert_eq!(c.seal_anchor_every, 7);
    assert_eq!(c.erase_fields, ["request.POST"]);
    assert_eq!(c.retention_days, Some(30));
    assert_eq!(c.queue_max_bytes, 4096);
    assert!(!c.capture.redact);
    // Names are kept as written; the redaction policy normalises them when it is built.
    assert_eq!(c.capture.redact_keys, ["favourite_colour"]);
    assert_eq!(c.capture.redact_headers, ["X-Tenant"]);
    assert_eq!(c.capture.unredact_keys, ["session"]);
    assert_eq!(c.capture.unredact_headers, ["cookie"]);
    assert_eq!(c.capture.max_body_bytes, 10);
    assert_eq!(c.capture.max_exception_bytes, 20);
    assert_eq!(c.capture.interlink_header, "x-correlation-id");
    assert_eq!(c.capture.default_app, "web");
    assert!(c.blacklist.is_blacklisted("demo", "/"));
    assert!(c.blacklist.is_blacklisted("other", "/static/x.css"));
}

#[test]
fn environment_overrides_the_file() {
    let c = AuditConfig::from_sources(
        Some("run_async = false\ndb_alias = \"file\""),
        [
            ("AUDIT_RUN_ASYNC", "true"),
            ("AUDIT_DB", "/tmp/x.db"),
            ("AUDIT_LOGGED_MODELS", "a::B, c::D"),
            ("AUDIT_BLACKLIST", r#"{ "" = ["^/x"] }"#),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    )
    .unwrap();
    assert!(c.run_async);
    assert_eq!(c.db_alias, "file");
    assert_eq!(c.db_connection, DbConnection::Sqlite("/tmp/x.db".into()));
    assert_eq!(c.logged_models, ["a::B", "c::D"]);
    assert!(c.blacklist.is_blacklisted("any", "/x1"));
    // The capture table, whole, as a TOML inline table.
    let c = env(&[(
        "AUDIT_CAPTURE",
        "{ redact_keys = ['colour'], redact_headers = ['x-tenant'], max_body_bytes = 99 }",
    )])
    .unwrap();
    assert_eq!(c.capture.redact_keys, ["colour"]);
    assert_eq!(c.capture.redact_headers, ["x-tenant"]);
    assert_eq!(c.capture.max_body_bytes, 99);
    // The original's queue setting name is accepted too.
    assert_eq!(
        env(&[("AUDIT_CELERY_QUEUE", "celery")]).unwrap().queue_name,
        "celery"
    );
}

#[test]
fn invalid_values_name_the_setting() {
    let cases: &[(&str, &str)] = &[
        ("unknown_key = 1", "unknown setting `unknown_key`"),
        ("activate = \"yes\"", "activate: expected true or false"),
        (
            "[blacklist]\napi = '^/api/'",
            "blacklist.\"api\": expected a list of regex strings",
        ),
        (
            "[blacklist]\napi = ['(unclosed']",
            "blacklist.\"api\": invalid regex `(unclosed`",
        ),
        (
            "access_indexes = ['custom..x']",
            "access_indexes: index path `custom..x` has an empty segment",
        ),
        (
            "process_indexes = ['$bad']",
            "process_indexes: index path `$bad` may only hold",
        ),
        (
            "model_action_indexes = [[]]",
            "model_action_indexes: expected an index path or a non-empty list",
        ),
        (
            "db_connection = 'mongodb://'",
            "db_connection: malformed MongoDB URI",
        ),
        (
            "db_connection = 'mysql://x/y'",
            "db_connection: unsupported scheme `mysql://`",
        ),
        (
            "db_connection = 'postgres:///audit'",
            "db_connection: malformed PostgreSQL URI",
        ),
        (
            "db_connection = 'postgres://u:p@ss@h/audit'",
            "must be percent-encoded",
        ),
        (
            "[db_connection]\nHOST = ['a', 'b']\nPORT = [1]",
            "HOST and PORT must have the same number of entries",
        ),
        (
            "[db_connection]\nHOSTS = 'a'",
            "unknown setting `db_connection.HOSTS`",
        ),
        (
            "full_policy = 'sometimes'",
            "full_policy: expected \"block\" or \"drop\"",
        ),
        (
            "[capture]\nredact_everything = true",
            "unknown setting `capture.redact_everything`",
        ),
        ("not toml at all [", "config file is not valid TOML"),
    ];
    for (toml, want) in cases {
        let e = cfg(toml).expect_err(toml);
        assert!(
            e.contains(want),
            "for {toml:?}: {e:?} should contain {want:?}"
        );
        assert!(e.starts_with("invalid audit configuration: "), "{e}");
    }
    let e = env(&[("AUDIT_RUN_ASYNC", "maybe")]).unwrap_err();
    assert!(
        e.contains("AUDIT_RUN_ASYNC: expected true or false, got `maybe`"),
        "{e}"
    );
}

#[test]
fn mongo_uris_are_built_like_the_original() {
    let parts = |toml: &str| match cfg(toml).unwrap().db_connection {
        DbConnection::Mongo { uri, database } => (uri, database),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        parts("[db_connection]\nHOST = 'host'\nPORT = 0\nNAME = 'foo'").0,
        "mongodb://host:0/foo"
    );
    assert_eq!(
        parts("[db_connection]\nHOST = ['host1', 'host2']\nPORT = [0, 1]\nNAME = 'foo'\nREPLICA_SET = 'replica'").0,
        "mongodb://host1:0,host2:1/foo?replicaSet=replica"
    );
    assert_eq!(
        parts("[db_connection]\nHOST = 'host'\nPORT = 0\nNAME = 'foo'\nUSER = 'user'\nPASSWORD = 'pass'").0,
        "mongodb://user:pass@host:0/foo"
    );
    // Credentials are percent-encoded.
    let mut p = MongoParts::default();
    p.user = "us@r".into();
    p.password = "p:a/s%s".into();
    assert_eq!(
        p.uri().unwrap(),
        "mongodb://us%40r:p%3Aa%2Fs%25s@localhost:27017/audit"
    );
    // Missing keys fall back to localhost, 27017, audit.
    assert_eq!(
        parts("[db_connection]\n"),
        ("mongodb://localhost:27017/audit".into(), "audit".into())
    );
}

#[test]
fn connection_strings_pick_the_store_and_hide_passwords() {
    assert_eq!(
        parse_connection_str("audit.db").unwrap(),
        DbConnection::Sqlite("audit.db".into())
    );
    assert_eq!(
        parse_connection_str("sqlite:///var/a.db").unwrap(),
        DbConnection::Sqlite("/var/a.db".into())
    );
    let c = parse_connection_str("mongodb://u:secret@h:1/db?authSource=admin").unwrap();
    assert_eq!(
        c,
        DbConnection::Mongo {
            uri: "mongodb://u:secret@h:1/db?authSource=admin".into(),
            database: "db".into()
        }
    );
    assert_eq!(
        c.to_string(),
        "mongodb://u:****@h:1/db?authSource=admin (database db)"
    );
    assert!(!format!("{c:?}").contains("secret"));
    for scheme in ["postgres", "postgresql"] {
        let c = parse_connection_str(&format!(
            "{scheme}://audit:s3cret@db.internal:5433/trail?sslmode=require"
        ))
        .unwrap();
        assert_eq!(
            c,
            DbConnection::Postgres {
                uri: format!("{scheme}://audit:s3cret@db.internal:5433/trail?sslmode=require")
            }
        );
        assert_eq!(
            c.to_string(),
            format!("{scheme}://audit:****@db.internal:5433/trail?sslmode=require")
        );
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}

/// `DB_AUDIT_PASSWORD` completes a PostgreSQL URI without a password (and with `DB_AUDIT_USER`,
/// one without user info), never one that has its own; the password is never shown.
#[test]
fn postgres_takes_its_password_from_the_uri_or_the_environment() {
    let with = |db: &str, vars: &[(&str, &str)]| {
        let mut all = vec![("AUDIT_DB", db)];
        all.extend_from_slice(vars);
        env(&all).unwrap().db_connection
    };
    let pw = [("DB_AUDIT_PASSWORD", "p@ss/w:rd")];
    assert_eq!(
        with("postgres://audit@h/trail", &pw),
        DbConnection::Postgres {
            uri: "postgres://audit:p%40ss%2Fw%3Ard@h/trail".into()
        }
    );
    assert_eq!(
        with(
            "postgres://h/trail",
            &[("DB_AUDIT_USER", "audit"), ("DB_AUDIT_PASSWORD", "x")]
        ),
        DbConnection::Postgres {
            uri: "postgres://audit:x@h/trail".into()
        }
    );
    assert_eq!(
        with("postgres://me:mine@h/trail", &pw),
        DbConnection::Postgres {
            uri: "postgres://me:mine@h/trail".into()
        },
        "a URI's own password wins"
    );
    let shown = with("postgres://audit@h/trail", &pw).to_string();
    assert!(
        !shown.contains("p%40ss") && shown.contains("****"),
        "{shown}"
    );
}

fn blacklist(entries: &[(&str, &[&str])]) -> Blacklist {
    let map: BTreeMap<String, Vec<String>> = entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
        .collect();
    Blacklist::compile(&map).unwrap()
}

#[test]
fn blacklist_searches_like_the_original() {
    let b = blacklist(&[("", &["blacklist"])]);
    for (path, hit) in [
        ("/test", false),
        ("/blacklist/", true),
        ("/test/blacklist", true),
        ("/blacklisttest", true),
        ("/black/list", false),
    ] {
        assert_eq!(b.is_blacklisted("any", path), hit, "{path}");
    }
    let b = blacklist(&[("api", &["^/x"]), ("", &["^/y"])]);
    assert!(b.is_blacklisted("api", "/x1") && b.is_blacklisted("api", "/y1"));
    assert!(b.is_blacklisted("web", "/y1") && !b.is_blacklisted("web", "/x1"));
    // The original demo's negative look-ahead.
    let b = blacklist(&[("demo", &[r"^(?!(/access/|/modelaction/)).*$"])]);
    assert!(b.is_blacklisted("demo", "/") && b.is_blacklisted("demo", "/admin/"));
    assert!(
        !b.is_blacklisted("demo", "/access/class/")
            && !b.is_blacklisted("demo", "/modelaction/create/")
    );
    assert!(
        !b.is_blacklisted("django", "/admin/"),
        "other apps are unaffected"
    );
    // Case-sensitive.
    assert!(!blacklist(&[("", &["^/Admin"])]).is_blacklisted("a", "/admin"));
}

#[test]
fn redaction_settings_add_to_the_defaults_and_only_unredact_removes() {
    // Adding a key or a header keeps every default.
    let c = cfg("[capture]\nredact_keys = ['Favourite-Colour']\nredact_headers = ['X-Tenant']")
        .unwrap();
    let p = c.capture.redaction();
    assert!(p.is_secret_key("favourite_colour"));
    assert!(
        p.is_secret_key("password") && p.is_secret_key("api_key"),
        "defaults kept"
    );
    assert!(p.is_secret_header("x-tenant"));
    assert!(p.is_secret_header("authorization") && p.is_secret_header("x-api-key"));
    // The environment adds the same way.
    let c = env(&[("AUDIT_CAPTURE", "{ redact_keys = ['colour'] }")]).unwrap();
    let p = c.capture.redaction();
    assert!(p.is_secret_key("colour") && p.is_secret_key("token"));
    // Removing a default is explicit.
    let c =
        cfg("[capture]\nunredact_keys = ['session', 'csrf_token']\nunredact_headers = ['Cookie']")
            .unwrap();
    let p = c.capture.redaction();
    assert!(
        !p.is_secret_key("session_count"),
        "the default pattern was removed"
    );
    assert!(
        !p.is_secret_key("csrf_token"),
        "the exact name was exempted"
    );
    assert!(
        p.is_secret_key("csrf") && p.is_secret_key("password"),
        "the rest stays"
    );
    assert!(!p.is_secret_header("cookie"));
    assert!(p.is_secret_header("authorization"));
    // Empty names would match everything (or nothing): rejected, naming the setting.
    for key in [
        "redact_keys",
        "unredact_keys",
        "redact_headers",
        "unredact_headers",
    ] {
        let e = cfg(&format!("[capture]\n{key} = ['-']")).unwrap_err();
        assert!(
            e.contains(&format!("capture.{key}: names must not be empty")),
            "{e}"
        );
        let e = cfg(&format!("[capture]\n{key} = 'password'")).unwrap_err();
        assert!(
            e.contains(&format!("capture.{key}: expected a list of strings")),
            "{e}"
        );
    }
}

#[test]
fn exception_cap_is_a_setting() {
    assert_eq!(cfg("").unwrap().capture.max_exception_bytes, 16 * 1024);
    assert_eq!(
        cfg("[capture]\nmax_exception_bytes = 100")
            .unwrap()
            .capture
            .max_exception_bytes,
        100
    );
    for bad in ["0", "-1", "'big'"] {
        let e = cfg(&format!("[capture]\nmax_exception_bytes = {bad}")).unwrap_err();
        assert!(
            e.contains("capture.max_exception_bytes: expected a positive integer"),
            "{e}"
        );
    }
}

#[test]
fn passwords_with_reserved_characters_and_secret_options_are_never_shown() {
    const PW: &str = "s3cr3t-Pw/with?slash-Qz8Lm2Xv7Kp4";
    const TLS: &str = "s3cr3t-tls-key-password-Wn3Bc9Hj5Rt1";
    // Shown (messages, logs, `Debug`) with the password and secret options masked, even when the
    // password was not percent-encoded.
    let uri = format!(
        "mongodb://admin:{PW}@h1:1,h2:2/trail?tlsCertificateKeyFilePassword={TLS}&replicaSet=rs"
    );
    let shown = audit_runtime::config::redact_uri(&uri);
    assert_eq!(
        shown,
        "mongodb://admin:****@h1:1,h2:2/trail?tlsCertificateKeyFilePassword=****&replicaSet=rs"
    );
    // Such a URI is refused (the driver would refuse it too, quoting the password as a host),
    // and the refusal does not show the password either.
    for bad in [
        uri.clone(),
        format!("mongodb://admin:{PW}@/trail"),
        "mongodb://admin:s3cr3t-lone%-percent@h/trail".to_owned(),
        "mongodb://admin:s3cr3t-at@sign@h/trail".to_owned(),
    ] {
        let e = parse_connection_str(&bad).unwrap_err().to_string();
        assert!(!e.contains("s3cr3t"), "{e}");
        assert!(
            e.contains("db_connection:") && e.contains("admin:****@"),
            "{e}"
        );
        let e = cfg(&format!("db_connection = '{bad}'")).unwrap_err();
        assert!(!e.contains("s3cr3t"), "{e}");
    }
    // Encoded, it is accepted; `Display` and `Debug` (of the connection and of the whole
    // configuration) never show it.
    let encoded = format!(
        "mongodb://admin:s3cr3t-Pw%2Fwith%3Fslash@h1:1,h2:2/trail?tlsCertificateKeyFilePassword={TLS}&replicaSet=rs"
    );
    let c = parse_connection_str(&encoded).unwrap();
    match &c {
        DbConnection::Mongo { database, .. } => assert_eq!(database, "trail"),
        other => panic!("{other:?}"),
    }
    for shown in [c.to_string(), format!("{c:?}")] {
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("admin:****@h1:1,h2:2/trail"), "{shown}");
        assert!(shown.contains("replicaSet=rs"), "{shown}");
    }
    let c = cfg(&format!("db_connection = '{encoded}'")).unwrap();
    assert!(!format!("{c:?}").contains("s3cr3t"));
}

/// Runs `f` with a subscriber that records every event at every level, without colours, and
/// returns its result with what was logged. The subscriber is this thread's only, so tests running
/// in parallel do not see each other's lines.
fn logged<R>(f: impl FnOnce() -> R) -> (R, String) {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

#[test]
fn an_unknown_environment_variable_is_a_warning_and_an_unknown_key_an_error() {
    // Another tool's variable under the same prefix does not stop the application.
    let (c, log) = logged(|| {
        env(&[
            ("AUDIT_LOG_LEVEL", "debug"),
            ("AUDIT_ACTIVTE", "false"),
            ("AUDIT_API_KEY", "s3cr3t-other-tool-Jd8Wq3"),
            ("AUDIT_QUEUE_NAME", "still-read"),
            // This project's own variables that are not settings pass silently.
            ("AUDIT_CONSOLE_TOKEN", "s3cr3t-console-token-Rm5Tp1"),
            ("AUDIT_CONFIG", "audit.toml"),
            ("AUDIT_LOG", "info"),
            ("AUDIT_MACROS_DEBUG", "1"),
        ])
    });
    let c = c.expect("unknown AUDIT_* variables are not errors");
    assert_eq!(c.queue_name, "still-read", "the known ones still apply");
    assert!(c.activate, "the misspelt one changed nothing");
    for var in ["AUDIT_LOG_LEVEL", "AUDIT_ACTIVTE", "AUDIT_API_KEY"] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("`{var}`")))
            .unwrap_or_else(|| panic!("no warning names {var}: {log:?}"));
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains("not an audit setting"), "{line}");
    }
    // Warnings quote the name in backticks (`AUDIT_LOG` is a prefix of `AUDIT_LOG_LEVEL`).
    for var in [
        "AUDIT_QUEUE_NAME",
        "AUDIT_CONSOLE_TOKEN",
        "AUDIT_CONFIG",
        "AUDIT_LOG",
        "AUDIT_MACROS_DEBUG",
    ] {
        assert!(
            !log.contains(&format!("`{var}`")),
            "{var} is no unknown variable: {log}"
        );
    }
    // Only names are logged: the value of another tool's variable may be a secret.
    assert!(!log.contains("s3cr3t"), "{log}");
    // A key of the configuration file is ours alone: a typo there stays an error.
    let e = cfg("activte = false").unwrap_err();
    assert!(e.contains("unknown setting `activte`"), "{e}");
    let e = cfg("[capture]\nredact_kyes = ['x']").unwrap_err();
    assert!(e.contains("unknown setting `capture.redact_kyes`"), "{e}");
}

#[test]
fn loading_logs_the_file_and_the_store_without_the_password() {
    const PW: &str = "s3cr3t-startup-Pw-Hq7Zt2Lk9";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.toml");
    std::fs::write(
        &file,
        format!("db_connection = 'mongodb://admin:{PW}@db.example:27017/trail'\n"),
    )
    .unwrap();
    let (c, log) = logged(|| AuditConfig::load(Some(&file)));
    let c = c.unwrap();
    assert!(matches!(c.db_connection, DbConnection::Mongo { .. }));
    let line = log
        .lines()
        .find(|l| l.contains("audit configuration"))
        .unwrap_or_else(|| panic!("no startup line: {log:?}"));
    assert!(line.contains("INFO"), "{line}");
    assert!(
        line.contains(&format!("config file {}", file.display())),
        "{line}"
    );
    assert!(
        line.contains("store: MongoDB mongodb://admin:****@db.example:27017/trail"),
        "{line}"
    );
    assert!(!log.contains("s3cr3t"), "{log}");

    // A SQLite store is named by its absolute path.
    std::fs::write(&file, "db_connection = 'relative/trail.db'\n").unwrap();
    let (c, log) = logged(|| AuditConfig::load(Some(&file)));
    c.unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert!(
        log.contains(&format!(
            "store: SQLite file {}",
            cwd.join("relative/trail.db").display()
        )),
        "{log}"
    );

    // A named file that cannot be read is an error, not the defaults.
    let missing = dir.path().join("missing.toml");
    let (c, _) = logged(|| AuditConfig::load(Some(&missing)));
    let e = c.unwrap_err().to_string();
    assert!(e.contains("cannot read config file"), "{e}");
}

#[test]
fn connection_parts_do_not_show_the_password() {
    let mut p = MongoParts::default();
    p.user = "admin".into();
    p.password = "s3cr3t-parts-Pw-Vb8Xn1".into();
    let shown = format!("{p:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(
        shown.contains("\"****\"") && shown.contains("admin"),
        "{shown}"
    );
}
