//! The `Process` document: the OS process that served accesses and made model actions
//! (collection `audit_process`), unique by `(pid, machine, creation_time)`.

use super::serde_util::utc;
use super::{python_datetime, AuditDocument, Collection};
use bson::oid::ObjectId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One OS process. Computed once per process and upserted atomically by its identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Process {
    /// Chosen by the first writer; later upserts return the stored one.
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// Correlation id of the process, when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interlink_id: Option<String>,
    /// The program name (basename of `argv[0]`, or the `manage.py` sub-command).
    pub name: String,
    /// The remaining arguments, joined by spaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<String>,
    /// The host name.
    pub machine: String,
    /// The OS user running the process.
    pub user: String,
    /// The OS process id.
    pub pid: i32,
    /// When the process started, UTC, at full BSON (millisecond) precision.
    #[serde(with = "utc")]
    pub creation_time: DateTime<Utc>,
}

impl AuditDocument for Process {
    const COLLECTION: Collection = Collection::Process;
    fn id(&self) -> ObjectId {
        self.id
    }
}

impl Process {
    /// `Process {name} with pid {pid} run by {user} on {machine} ({creation_time})`, the original's text.
    pub fn verbose_str(&self) -> String {
        format!(
            "Process {} with pid {} run by {} on {} ({})",
            self.name,
            self.pid,
            self.user,
            self.machine,
            python_datetime(&self.creation_time)
        )
    }
}

/// `Process{name, pid:pid, user:user, machine:machine, creation_time:time}`, the original's text.
impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Process{{{}, pid:{}, user:{}, machine:{}, creation_time:{}}}",
            self.name,
            self.pid,
            self.user,
            self.machine,
            python_datetime(&self.creation_time)
        )
    }
}
