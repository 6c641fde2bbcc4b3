//! The `Access` document: one request served by an audited handler (collection `audit_access`).

use super::serde_util::{null_default, utc, utc_opt};
use super::{python_datetime, AuditDocument, Collection};
use bson::{oid::ObjectId, Bson, Document};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// One access to a handler: request, response or exception, timing, view, user and custom data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Access {
    /// Chosen when the request starts, so model actions can reference it before it is stored.
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// Correlation id of the request (`x-request-id`, W3C trace id, or generated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interlink_id: Option<String>,
    /// What was asked.
    pub request: AccessRequest,
    /// What was answered, when there was an answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<AccessResponse>,
    /// The handler's error or panic, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<AccessException>,
    /// When the request arrived and when it was answered.
    pub time: AccessTime,
    /// Which handler served it.
    pub view: AccessView,
    /// Who asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<AccessUser>,
    /// Data from the custom providers, one key per provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<Document>,
    /// The [`Process`](super::Process) that served the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ObjectId>,
}

impl AuditDocument for Access {
    const COLLECTION: Collection = Collection::Access;
    fn id(&self) -> ObjectId {
        self.id
    }
}

impl Access {
    /// A new access with a fresh id, the request's path and arrival time, and the view; everything
    /// else empty.
    pub fn new(path: impl Into<String>, requested_at: DateTime<Utc>, view: AccessView) -> Self {
        Access {
            id: ObjectId::new(),
            interlink_id: None,
            request: AccessRequest::new(path),
            response: None,
            exception: None,
            time: AccessTime {
                request: requested_at,
                response: None,
            },
            view,
            user: None,
            custom: None,
            process: None,
        }
    }

    /// The request path (the original's `url` property).
    pub fn url(&self) -> &str {
        &self.request.path
    }

    /// Replaces the request path.
    pub fn set_url(&mut self, url: impl Into<String>) {
        self.request.path = url.into();
    }

    /// True when a (non-empty) response was recorded.
    pub fn is_response(&self) -> bool {
        self.response.is_some()
    }

    /// True when an exception was recorded.
    pub fn is_exception(&self) -> bool {
        self.exception.is_some()
    }

    /// The user's name, or `Anonymous` when no user was recorded.
    fn username(&self) -> &str {
        self.user
            .as_ref()
            .map_or(AccessUser::ANONYMOUS_NAME, |u| u.username.as_str())
    }

    /// `Access to view {name} from app {app} mapped to url {path} by user {username} ({time})`, the original's text.
    pub fn verbose_str(&self) -> String {
        format!(
            "Access to view {} from app {} mapped to url {} by user {} ({})",
            self.view.name,
            self.view.app,
            self.request.path,
            self.username(),
            python_datetime(&self.time.request)
        )
    }

    /// The user record behind `user.id`, through the application's lookup (`None` when unknown).
    pub fn get_user<L: UserLookup + ?Sized>(&self, lookup: &L) -> Option<L::User> {
        lookup.find_user(&self.user.as_ref()?.id)
    }
}

/// `Access{full_name, user:username, url:path, time:time}`, the original's text.
impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Access{{{}, user:{}, url:{}, time:{}}}",
            self.view.full_name,
            self.username(),
            self.request.path,
            python_datetime(&self.time.request)
        )
    }
}

/// How [`Access::get_user`] finds the application's user for a stored id.
pub trait UserLookup {
    /// The application's user type.
    type User;
    /// The user with this id, or `None`.
    fn find_user(&self, id: &UserId) -> Option<Self::User>;
}

/// The request part of an [`Access`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[allow(non_snake_case)]
pub struct AccessRequest {
    /// The path, without query string, Unicode kept.
    pub path: String,
    /// Query parameters; a repeated key holds a list.
    #[serde(default, deserialize_with = "null_default")]
    pub GET: Document,
    /// Form fields of a form-encoded body; a repeated key holds a list.
    #[serde(default, deserialize_with = "null_default")]
    pub POST: Document,
    /// Cookies (values masked unless redaction is turned off).
    #[serde(default, deserialize_with = "null_default")]
    pub COOKIES: Document,
    /// Method, scheme, HTTP version, headers and client address.
    #[serde(default, deserialize_with = "null_default")]
    pub METADATA: Document,
    /// Only ever set by the original (a fallback that leaked the server's environment); kept so
    /// its documents still read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub RAW_METADATA: Option<String>,
}

impl AccessRequest {
    /// A request part with only a path.
    pub fn new(path: impl Into<String>) -> Self {
        AccessRequest {
            path: path.into(),
            ..Default::default()
        }
    }
}

/// The response part of an [`Access`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessResponse {
    /// JSON bodies as documents, XML as text, anything else null.
    #[serde(default, skip_serializing_if = "is_null")]
    pub content: Bson,
    /// The raw `Content-Type` header (`""` when absent).
    #[serde(rename = "type")]
    pub content_type: String,
    /// The HTTP status.
    pub status_code: i32,
}

fn is_null(b: &Bson) -> bool {
    matches!(b, Bson::Null)
}

/// The exception part of an [`Access`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessException {
    /// The error's type path (`std::io::Error`), or `panic`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The error's `Display` text, or the panic message.
    pub message: String,
    /// The chain of `source()`s, or the panic's backtrace.
    pub trace: String,
}

/// The timing part of an [`Access`], in UTC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessTime {
    /// When the request arrived.
    #[serde(with = "utc")]
    pub request: DateTime<Utc>,
    /// When it was answered; absent until then.
    #[serde(default, with = "utc_opt", skip_serializing_if = "Option::is_none")]
    pub response: Option<DateTime<Utc>>,
}

/// The view part of an [`Access`]: which handler served the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AccessView {
    /// The handler's Rust path (`my_app::handlers::index`, or `Type::method`).
    pub full_name: String,
    /// The crate (first path segment) or the `app = "..."` override.
    pub app: String,
    /// The handler's name or the `name = "..."` override.
    pub name: String,
    /// The route's positional URL parameters, as strings.
    #[serde(default, deserialize_with = "null_default")]
    pub args: Vec<Bson>,
    /// The route's named URL parameters and any named handler arguments.
    #[serde(default, deserialize_with = "null_default")]
    pub kwargs: Document,
}

impl AccessView {
    /// A view identity with empty arguments.
    pub fn new(
        full_name: impl Into<String>,
        app: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        AccessView {
            full_name: full_name.into(),
            app: app.into(),
            name: name.into(),
            ..Default::default()
        }
    }
}

/// The user part of an [`Access`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessUser {
    /// The user's id: an integer as in the original, or any string id (UUIDs): an integer-only id lost users of other schemes.
    pub id: UserId,
    /// The user's name, `Anonymous` for anonymous requests.
    pub username: String,
}

impl AccessUser {
    /// The id the original gave anonymous requests.
    pub const ANONYMOUS_ID: i64 = -1;
    /// The name the original gave anonymous requests.
    pub const ANONYMOUS_NAME: &'static str = "Anonymous";

    /// `{id: -1, username: "Anonymous"}`, the original's anonymous user.
    pub fn anonymous() -> Self {
        AccessUser {
            id: UserId::Int(Self::ANONYMOUS_ID),
            username: Self::ANONYMOUS_NAME.to_owned(),
        }
    }

    /// A known user.
    pub fn new(id: impl Into<UserId>, username: impl Into<String>) -> Self {
        AccessUser {
            id: id.into(),
            username: username.into(),
        }
    }

    /// True for the anonymous user.
    pub fn is_anonymous(&self) -> bool {
        self.id == UserId::Int(Self::ANONYMOUS_ID)
    }
}

/// A user id: stored as a BSON integer when it is one (the original's `IntField`), else as a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UserId {
    /// An integer id (stored as Int64; Int32 ids written by the original read back here).
    Int(i64),
    /// Any other id: UUIDs, usernames, external subject ids.
    Str(String),
}

impl From<i64> for UserId {
    fn from(v: i64) -> Self {
        UserId::Int(v)
    }
}
impl From<i32> for UserId {
    fn from(v: i32) -> Self {
        UserId::Int(v.into())
    }
}
impl From<u32> for UserId {
    fn from(v: u32) -> Self {
        UserId::Int(v.into())
    }
}
impl From<&str> for UserId {
    fn from(v: &str) -> Self {
        UserId::Str(v.to_owned())
    }
}
impl From<String> for UserId {
    fn from(v: String) -> Self {
        UserId::Str(v)
    }
}

impl From<UserId> for Bson {
    fn from(id: UserId) -> Bson {
        match id {
            UserId::Int(i) => Bson::Int64(i),
            UserId::Str(s) => Bson::String(s),
        }
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserId::Int(i) => write!(f, "{i}"),
            UserId::Str(s) => f.write_str(s),
        }
    }
}

impl Serialize for UserId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            UserId::Int(i) => s.serialize_i64(*i),
            UserId::Str(v) => s.serialize_str(v),
        }
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = UserId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string user id")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<UserId, E> {
                Ok(UserId::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<UserId, E> {
                i64::try_from(v)
                    .map(UserId::Int)
                    .map_err(|_| E::custom("user id out of range"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<UserId, E> {
                Ok(UserId::Str(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<UserId, E> {
                Ok(UserId::Str(v))
            }
        }
        d.deserialize_any(V)
    }
}
