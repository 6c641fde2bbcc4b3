//! Where the audit documents go, and everything about MongoDB and PostgreSQL connection strings:
//! parsing them (or building a MongoDB one from the original's `HOST` / `PORT` / `NAME` table),
//! percent-encoding the user info, adding the credentials of `DB_AUDIT_USER` /
//! `DB_AUDIT_PASSWORD`, and masking the password whenever a connection is shown.

use super::{as_str, as_str_list, err, ConfigError};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use std::path::PathBuf;
use toml::{Table, Value};

/// The user and password of `DB_AUDIT_USER` / `DB_AUDIT_PASSWORD`, when set.
pub(super) type Credentials = (Option<String>, Option<String>);

/// Where the audit documents go.
#[derive(Clone, PartialEq, Eq)]
pub enum DbConnection {
    /// The embedded store: a SQLite file.
    Sqlite(PathBuf),
    /// A MongoDB deployment.
    Mongo {
        /// The connection string, credentials percent-encoded.
        uri: String,
        /// The database holding the three collections.
        database: String,
    },
    /// A PostgreSQL database: `postgres://` or `postgresql://`, libpq's form (the tables go into
    /// the first schema of the connection's `search_path`).
    Postgres {
        /// The connection string, credentials percent-encoded.
        uri: String,
    },
}

impl std::fmt::Debug for DbConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// Shows the connection with any password replaced by `****`.
impl std::fmt::Display for DbConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbConnection::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            DbConnection::Mongo { uri, database } => {
                write!(f, "{} (database {database})", redact_uri(uri))
            }
            DbConnection::Postgres { uri } => f.write_str(&redact_uri(uri)),
        }
    }
}

/// Characters escaped in URI user info (RFC 3986 reserved plus `%`).
const USERINFO: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'%')
    .add(b':')
    .add(b'/')
    .add(b'?')
    .add(b'#')
    .add(b'[')
    .add(b']')
    .add(b'@')
    .add(b'!')
    .add(b'$')
    .add(b'&')
    .add(b'\'')
    .add(b'(')
    .add(b')')
    .add(b'*')
    .add(b'+')
    .add(b',')
    .add(b';')
    .add(b'=')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

pub(super) fn parse_connection(
    v: &Value,
    credentials: &Credentials,
) -> Result<DbConnection, ConfigError> {
    match v {
        Value::String(s) => parse_connection_str(s),
        Value::Table(t) => {
            let parts = MongoParts::from_table(t)?;
            let mut parts = parts;
            if parts.user.is_empty() {
                if let (Some(u), Some(p)) = credentials {
                    parts.user = u.clone();
                    parts.password = p.clone();
                }
            }
            Ok(DbConnection::Mongo {
                uri: parts.uri()?,
                database: parts.name.clone(),
            })
        }
        other => err(format!(
            "db_connection: expected a SQLite path, a mongodb:// URI or a table, got {other}"
        )),
    }
}

/// Parses a connection string: a `mongodb://` / `mongodb+srv://` URI, or a SQLite path (optionally
/// `sqlite:` prefixed).
pub fn parse_connection_str(s: &str) -> Result<DbConnection, ConfigError> {
    let s = s.trim();
    if s.is_empty() {
        return err("db_connection: empty value");
    }
    if s.starts_with("mongodb://") || s.starts_with("mongodb+srv://") {
        let rest = s.split_once("://").map(|x| x.1).unwrap_or_default();
        // Hosts and database come after the user info, which may hold a `/` or a `?`.
        let (userinfo, rest) = crate::secret::split_userinfo(rest);
        // The driver would reject such user info too, but its error quotes the text it took for a
        // host (`admin:<password>`): refuse it here, with the password masked.
        if let Some(userinfo) = userinfo {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            if !is_encoded_userinfo(user) || !is_encoded_userinfo(password) {
                return err(format!(
                    "db_connection: the user name and password of a MongoDB URI must be \
                     percent-encoded (`:`, `/`, `?`, `#`, `[`, `]`, `@` and `%` as %XX): `{}`",
                    redact_uri(s)
                ));
            }
        }
        let hosts = rest.split(['/', '?']).next().unwrap_or_default();
        if hosts.is_empty()
            || hosts.split(',').any(|h| h.is_empty() || h.starts_with(':'))
            || s.contains(char::is_whitespace)
        {
            return err(format!(
                "db_connection: malformed MongoDB URI `{}`",
                redact_uri(s)
            ));
        }
        let database = rest
            .split_once('/')
            .map(|x| x.1.split('?').next().unwrap_or_default())
            .filter(|d| !d.is_empty())
            .unwrap_or("audit")
            .to_owned();
        return Ok(DbConnection::Mongo {
            uri: s.to_owned(),
            database,
        });
    }
    if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        let rest = s.split_once("://").map(|x| x.1).unwrap_or_default();
        let (userinfo, rest) = crate::secret::split_userinfo(rest);
        if let Some(userinfo) = userinfo {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            if !is_encoded_userinfo(user) || !is_encoded_userinfo(password) {
                return err(format!(
                    "db_connection: the user name and password of a PostgreSQL URI must be \
                     percent-encoded (`:`, `/`, `?`, `#`, `[`, `]`, `@` and `%` as %XX): `{}`",
                    redact_uri(s)
                ));
            }
        }
        let host = rest.split(['/', '?']).next().unwrap_or_default();
        if host.is_empty() || host.starts_with(':') || s.contains(char::is_whitespace) {
            return err(format!(
                "db_connection: malformed PostgreSQL URI `{}` (expected \
                 postgres://user@host[:port]/database)",
                redact_uri(s)
            ));
        }
        return Ok(DbConnection::Postgres { uri: s.to_owned() });
    }
    if let Some((scheme, _)) = s.split_once("://") {
        if scheme != "sqlite" {
            return err(format!(
                "db_connection: unsupported scheme `{scheme}://` (use a SQLite path, mongodb:// \
                 or postgres://)"
            ));
        }
    }
    let path = s
        .strip_prefix("sqlite://")
        .or_else(|| s.strip_prefix("sqlite:"))
        .unwrap_or(s);
    Ok(DbConnection::Sqlite(PathBuf::from(path)))
}

/// True when `part` of a URI's user info has every reserved character percent-encoded.
fn is_encoded_userinfo(part: &str) -> bool {
    let b = part.as_bytes();
    b.iter().enumerate().all(|(i, c)| match c {
        b':' | b'/' | b'?' | b'#' | b'[' | b']' | b'@' => false,
        b'%' => b.len() > i + 2 && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit(),
        _ => true,
    })
}

/// The original's `AUDIT_DB_CONNECTION` dictionary. Built from [`MongoParts::default`] with
/// fields set one by one (it may gain options, so it cannot be a struct literal outside this
/// crate).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MongoParts {
    /// One or several hosts.
    pub hosts: Vec<String>,
    /// As many ports as hosts.
    pub ports: Vec<u16>,
    /// The database.
    pub name: String,
    /// Empty for no authentication.
    pub user: String,
    /// Empty for no authentication.
    pub password: String,
    /// The replica set, if any.
    pub replica_set: Option<String>,
}

/// Shows the password as `****` (when there is one), like every other view of a connection.
impl std::fmt::Debug for MongoParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoParts")
            .field("hosts", &self.hosts)
            .field("ports", &self.ports)
            .field("name", &self.name)
            .field("user", &self.user)
            .field(
                "password",
                &if self.password.is_empty() { "" } else { "****" },
            )
            .field("replica_set", &self.replica_set)
            .finish()
    }
}

impl Default for MongoParts {
    fn default() -> Self {
        MongoParts {
            hosts: vec!["localhost".into()],
            ports: vec![27017],
            name: "audit".into(),
            user: String::new(),
            password: String::new(),
            replica_set: None,
        }
    }
}

impl MongoParts {
    fn from_table(t: &Table) -> Result<Self, ConfigError> {
        let mut p = MongoParts::default();
        for (k, v) in t {
            let key = format!("db_connection.{k}");
            match k.to_ascii_uppercase().as_str() {
                "HOST" => {
                    p.hosts = match v {
                        Value::String(s) => vec![s.clone()],
                        Value::Array(_) => as_str_list(&key, v)?,
                        other => return err(format!("{key}: expected a host or a list of hosts, got {other}")),
                    }
                }
                "PORT" => {
                    let one = |x: &Value| match x.as_integer() {
                        Some(n) if (0..=65535).contains(&n) => Ok(n as u16),
                        _ => err(format!("{key}: expected a port number, got {x}")),
                    };
                    p.ports = match v {
                        Value::Array(a) => a.iter().map(one).collect::<Result<_, _>>()?,
                        x => vec![one(x)?],
                    }
                }
                "NAME" => p.name = as_str(&key, v)?,
                "USER" => p.user = as_str(&key, v)?,
                "PASSWORD" => p.password = as_str(&key, v)?,
                "REPLICA_SET" => p.replica_set = Some(as_str(&key, v)?).filter(|s| !s.is_empty()),
                _ => return err(format!("unknown setting `{key}` (known: HOST, PORT, NAME, USER, PASSWORD, REPLICA_SET)")),
            }
        }
        Ok(p)
    }

    /// The connection string, with credentials percent-encoded (so reserved characters in them
    /// cannot change its meaning).
    pub fn uri(&self) -> Result<String, ConfigError> {
        if self.hosts.len() != self.ports.len() || self.hosts.is_empty() {
            return err(format!(
                "db_connection: HOST and PORT must have the same number of entries ({} hosts, {} ports)",
                self.hosts.len(),
                self.ports.len()
            ));
        }
        let hosts: Vec<String> = self
            .hosts
            .iter()
            .zip(&self.ports)
            .map(|(h, p)| format!("{h}:{p}"))
            .collect();
        let auth = if !self.user.is_empty() && !self.password.is_empty() {
            format!(
                "{}:{}@",
                utf8_percent_encode(&self.user, USERINFO),
                utf8_percent_encode(&self.password, USERINFO)
            )
        } else {
            String::new()
        };
        let options = match &self.replica_set {
            Some(rs) => format!("?replicaSet={rs}"),
            None => String::new(),
        };
        Ok(format!(
            "mongodb://{auth}{}/{}{options}",
            hosts.join(","),
            self.name
        ))
    }
}

fn uri_has_credentials(uri: &str) -> bool {
    let rest = uri.split_once("://").map_or(uri, |x| x.1);
    crate::secret::split_userinfo(rest).0.is_some()
}

fn insert_credentials(uri: &str, user: &str, password: &str) -> String {
    match uri.split_once("://") {
        Some((scheme, rest)) => format!(
            "{scheme}://{}:{}@{rest}",
            utf8_percent_encode(user, USERINFO),
            utf8_percent_encode(password, USERINFO)
        ),
        None => uri.to_owned(),
    }
}

/// Puts the credentials of `DB_AUDIT_USER` / `DB_AUDIT_PASSWORD` into a MongoDB connection that
/// has none of its own (percent-encoded, so a reserved character cannot change the URI's meaning).
/// A PostgreSQL URI takes them too; one that names a user but no password takes only the
/// password of `DB_AUDIT_PASSWORD`.
pub(super) fn apply_env_credentials(conn: &mut DbConnection, credentials: &Credentials) {
    match (conn, credentials) {
        (DbConnection::Mongo { uri, .. }, (Some(user), Some(password)))
            if !uri_has_credentials(uri) && !user.is_empty() =>
        {
            *uri = insert_credentials(uri, user, password);
        }
        (DbConnection::Postgres { uri }, (user, Some(password))) => {
            let rest = uri.split_once("://").map_or(uri.as_str(), |x| x.1);
            match crate::secret::split_userinfo(rest).0 {
                // A user without a password: the password goes after it.
                Some(info) if !info.contains(':') => {
                    let (scheme, rest) = uri.split_once("://").unwrap_or(("postgres", ""));
                    let rest = &rest[info.len() + 1..];
                    *uri = format!(
                        "{scheme}://{info}:{}@{rest}",
                        utf8_percent_encode(password, USERINFO)
                    );
                }
                Some(_) => {}
                None => {
                    if let Some(user) = user.as_deref().filter(|u| !u.is_empty()) {
                        *uri = insert_credentials(uri, user, password);
                    }
                }
            }
        }
        _ => {}
    }
}

/// The URI with its password, and the values of secret options such as
/// `tlsCertificateKeyFilePassword`, replaced by `****`, for messages and logs. A password holding
/// an unencoded `/`, `?` or `@` is masked whole.
pub fn redact_uri(uri: &str) -> String {
    crate::redact::default_policy().uri(uri)
}
