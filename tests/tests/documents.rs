//! The documents as the original defined them: field names and order, `items()`,
//! the exact strings, the accessors; plus key escaping and the snapshot diff.

use audit_runtime::internals::diff;
use audit_runtime::keys::{escape_document, escape_key, unescape_key};
use audit_runtime::{
    Access, AccessException, AccessRequest, AccessResponse, AccessTime, AccessUser, AccessView,
    Action, Items, ModelAction, ModelActionContent, ModelActionInstance, ModelActionModel, Process,
    UserId,
};
use audit_tests::at;
use bson::{doc, oid::ObjectId, Bson};

fn keys<T: Items>(v: &T) -> Vec<String> {
    v.items().into_iter().map(|(k, _)| k).collect()
}

fn sample_access() -> Access {
    let mut a = Access::new(
        "http://www.foo.bar",
        at(2016, 1, 15, 23, 24, 0),
        AccessView::new("audit_tools.views.foo", "audit_tools", "foo"),
    );
    a.user = Some(AccessUser::new(1, "foo user"));
    a
}

#[test]
fn embedded_items_follow_declaration_order_and_omit_nulls() {
    let t = at(2016, 1, 15, 23, 24, 0);
    assert_eq!(
        keys(&AccessTime {
            request: t,
            response: None
        }),
        ["request"]
    );
    assert_eq!(
        AccessTime {
            request: t,
            response: None
        }
        .items(),
        vec![(
            "request".to_owned(),
            Bson::DateTime(bson::DateTime::from_chrono(t))
        )]
    );
    assert_eq!(
        keys(&AccessView::new("f", "a", "n")),
        ["full_name", "app", "name", "args", "kwargs"]
    );
    assert_eq!(
        AccessView::new("f", "a", "n").items()[3].1,
        Bson::Array(vec![])
    );
    assert_eq!(keys(&AccessUser::new(1, "u")), ["id", "username"]);
    let resp = AccessResponse {
        content: Bson::String("x".into()),
        content_type: "text/xml".into(),
        status_code: 200,
    };
    assert_eq!(keys(&resp), ["content", "type", "status_code"]);
    let exc = AccessException {
        kind: "T".into(),
        message: "m".into(),
        trace: "t".into(),
    };
    assert_eq!(keys(&exc), ["type", "message", "trace"]);
    assert_eq!(
        keys(&AccessRequest::new("/x")),
        ["path", "GET", "POST", "COOKIES", "METADATA"]
    );
    assert_eq!(
        keys(&ModelActionModel::default()),
        ["full_name", "app", "name"]
    );
    assert_eq!(
        keys(&ModelActionContent::default()),
        ["old", "new", "changes"]
    );
    assert_eq!(keys(&ModelActionInstance::default()), ["id", "description"]);
}

fn sample_process() -> Process {
    Process {
        id: ObjectId::new(),
        interlink_id: None,
        name: "Foo process".into(),
        args: None,
        machine: "Bar machine".into(),
        user: "Foo user".into(),
        pid: 1,
        creation_time: at(2016, 1, 17, 19, 11, 0),
    }
}

#[test]
fn process_items_and_strings() {
    let p = sample_process();
    assert_eq!(
        keys(&p),
        ["_id", "name", "machine", "user", "pid", "creation_time"]
    );
    assert_eq!(
        p.verbose_str(),
        "Process Foo process with pid 1 run by Foo user on Bar machine (2016-01-17 19:11:00)"
    );
    assert_eq!(p.to_string(), "Process{Foo process, pid:1, user:Foo user, machine:Bar machine, creation_time:2016-01-17 19:11:00}");
}

#[test]
fn access_strings_and_accessors() {
    let mut a = sample_access();
    assert_eq!(
        a.verbose_str(),
        "Access to view foo from app audit_tools mapped to url http://www.foo.bar by user foo user (2016-01-15 23:24:00)"
    );
    assert_eq!(a.to_string(), "Access{audit_tools.views.foo, user:foo user, url:http://www.foo.bar, time:2016-01-15 23:24:00}");
    assert_eq!(a.url(), "http://www.foo.bar");
    a.set_url("http://www.bar.foo");
    assert_eq!(a.url(), "http://www.bar.foo");
    assert!(!a.is_response() && !a.is_exception());
    a.response = Some(AccessResponse {
        content: Bson::Null,
        content_type: String::new(),
        status_code: 500,
    });
    assert!(a.is_response() && !a.is_exception());
    a.exception = Some(AccessException {
        kind: "E".into(),
        message: String::new(),
        trace: String::new(),
    });
    assert!(a.is_response() && a.is_exception());
    // Sub-second times print their microseconds, as Python's str(datetime) did.
    a.time.request = at(2016, 1, 15, 23, 24, 0) + chrono::Duration::milliseconds(5);
    assert!(
        a.verbose_str().ends_with("(2016-01-15 23:24:00.005000)"),
        "{}",
        a.verbose_str()
    );
}

#[test]
fn model_action_strings_and_changes() {
    let mut m = ModelAction {
        id: ObjectId::new(),
        model: ModelActionModel {
            full_name: "app.models.Foo".into(),
            app: "app".into(),
            name: "Foo".into(),
        },
        action: Action::Update,
        content: ModelActionContent {
            old: doc! {},
            new: doc! {},
            changes: doc! { "a": { "old": 1, "new": 2 } },
        },
        instance: ModelActionInstance {
            id: "1".into(),
            description: "foo".into(),
        },
        timestamp: at(2016, 1, 17, 18, 16, 0),
        access: None,
        process: None,
    };
    assert_eq!(
        m.verbose_str(),
        "update instance 1 of model Foo from app app (2016-01-17 18:16:00)"
    );
    assert_eq!(
        m.to_string(),
        "ModelAction{app.models.Foo(1), action:update, time:2016-01-17 18:16:00}"
    );
    assert_eq!(m.changes(), &doc! { "a": { "old": 1, "new": 2 } });
    m.set_changes(doc! {});
    assert_eq!(m.changes(), &doc! {});
    m.set_changes(doc! { "x": 1 });
    m.clear_changes();
    assert_eq!(m.changes(), &doc! {});
    assert!(
        matches!(m.get_model(), Err(e) if e.to_string() == "Model app.models.Foo does not exist.")
    );
}

#[test]
fn an_action_outside_the_three_is_rejected() {
    let mut raw = bson::to_document(&ModelAction {
        id: ObjectId::new(),
        model: ModelActionModel::default(),
        action: Action::Create,
        content: ModelActionContent::default(),
        instance: ModelActionInstance::default(),
        timestamp: at(2016, 1, 1, 0, 0, 0),
        access: None,
        process: None,
    })
    .unwrap();
    assert_eq!(raw.get_str("action"), Ok("create"));
    raw.insert("action", "destroy");
    assert!(bson::from_document::<ModelAction>(raw).is_err());
}

#[test]
fn documents_written_by_the_original_deserialise() {
    // Shapes the original stored: Int32 user id, explicit nulls, RAW_METADATA, an unknown field.
    let t = bson::DateTime::from_millis(1_452_900_240_000);
    let raw = doc! {
        "_id": ObjectId::new(),
        "interlink_id": Bson::Null,
        "request": { "path": "/polls/", "GET": {}, "POST": {}, "COOKIES": {}, "METADATA": Bson::Null, "RAW_METADATA": "{...}" },
        "response": { "content": Bson::Null, "type": "text/html; charset=utf-8", "status_code": 200_i32 },
        "time": { "request": t, "response": t },
        "view": { "full_name": "polls.views.index", "app": "polls", "name": "index", "args": [], "kwargs": {} },
        "user": { "id": 23_i32, "username": "bob" },
        "custom": Bson::Null,
        "process": ObjectId::new(),
        "_cls": "Access",
    };
    let a: Access = bson::from_document(raw).unwrap();
    assert_eq!(a.user.as_ref().unwrap().id, UserId::Int(23));
    assert_eq!(a.request.RAW_METADATA.as_deref(), Some("{...}"));
    assert!(a.request.METADATA.is_empty());
    let process = doc! { "_id": ObjectId::new(), "name": "manage.py", "machine": "m", "user": "u", "pid": 5_i32, "creation_time": t };
    let p: Process = bson::from_document(process).unwrap();
    assert_eq!(p.args, None);
    let action = doc! {
        "_id": ObjectId::new(), "model": { "full_name": "a.B", "app": "a", "name": "B" }, "action": "delete",
        "content": { "old": { "x": 1 }, "new": Bson::Null, "changes": { "x": { "old": 1, "new": Bson::Null } } },
        "instance": { "id": "1", "description": "b" }, "timestamp": t, "access": Bson::Null,
    };
    let m: ModelAction = bson::from_document(action).unwrap();
    assert!(m.content.new.is_empty());
    assert_eq!(m.access, None);
}

#[test]
fn anonymous_user_is_the_originals() {
    let u = AccessUser::anonymous();
    assert_eq!(
        bson::to_document(&u).unwrap(),
        doc! { "id": -1_i64, "username": "Anonymous" }
    );
    assert!(u.is_anonymous());
    assert!(
        !AccessUser::new(0, "root").is_anonymous(),
        "id 0 is a real user"
    );
}

#[test]
fn key_escaping_is_reversible_and_collision_free() {
    assert_eq!(escape_key("plain"), "plain");
    let keys = ["a.b", "a_b", "$where", "a%2Eb", "%"];
    let escaped: Vec<String> = keys.iter().map(|k| escape_key(k)).collect();
    let mut dedup = escaped.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), keys.len(), "no two keys collide: {escaped:?}");
    for (k, e) in keys.iter().zip(&escaped) {
        assert!(!e.contains('.') && !e.starts_with('$'), "{e}");
        assert_eq!(&unescape_key(e), k);
    }
    let nested = escape_document(doc! { "x.y": { "$gt": [ { "a.b": 1 } ] }, "ok": 2 });
    assert_eq!(
        nested,
        doc! { "x%2Ey": { "%24gt": [ { "a%2Eb": 1 } ] }, "ok": 2 }
    );
}

#[test]
fn deep_documents_are_escaped_without_recursion() {
    let mut d = doc! { "k.0": 1 };
    for _ in 0..20_000 {
        d = doc! { "k.x": d };
    }
    let escaped = escape_document(d);
    // Every level is escaped, not only the top: walk down (by hand, since dropping a deep
    // document recurses in bson itself) and check each one.
    let mut cur = escaped;
    let mut levels = 0;
    while let Some(Bson::Document(inner)) = cur.remove("k%2Ex") {
        assert!(
            cur.is_empty(),
            "level {levels}: unescaped keys left: {cur:?}"
        );
        cur = inner;
        levels += 1;
    }
    assert_eq!(levels, 20_000, "every level was escaped");
    assert_eq!(cur, doc! { "k%2E0": 1 }, "the innermost level too");
}

#[test]
fn diff_reports_changed_added_and_removed_keys() {
    let old = doc! { "id": 1, "string_field": "Test", "integer_field": 1, "float_field": 1.0 };
    let mut new = old.clone();
    new.insert("string_field", "Modified");
    let changes = diff(&old, &new);
    assert_eq!(
        changes,
        doc! { "string_field": { "old": "Test", "new": "Modified" } }
    );
    // Create: every field from null.
    let created = diff(&doc! {}, &old);
    assert_eq!(
        created.keys().collect::<Vec<_>>(),
        ["id", "string_field", "integer_field", "float_field"]
    );
    assert_eq!(
        created.get_document("id").unwrap(),
        &doc! { "old": Bson::Null, "new": 1 }
    );
    // Delete: every field to null.
    let deleted = diff(&old, &doc! {});
    assert_eq!(
        deleted.get_document("float_field").unwrap(),
        &doc! { "old": 1.0, "new": Bson::Null }
    );
    // Keys on one side only are reported too (the original ignored them).
    let changes = diff(&doc! { "a": 1, "gone": 2 }, &doc! { "a": 1, "added": 3 });
    assert_eq!(
        changes,
        doc! { "gone": { "old": 2, "new": Bson::Null }, "added": { "old": Bson::Null, "new": 3 } }
    );
    assert_eq!(diff(&doc! {}, &doc! {}), doc! {});
}
