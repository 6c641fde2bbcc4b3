//! The `ModelAction` document: one create, update or delete of a registered model
//! (collection `audit_model_action`).

use super::serde_util::{null_default, utc};
use super::{python_datetime, AuditDocument, Collection};
use bson::{oid::ObjectId, Document};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One change to a model instance, with its old and new snapshots and the changed fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelAction {
    /// Chosen when the action is recorded.
    #[serde(rename = "_id")]
    pub id: ObjectId,
    /// Which model.
    pub model: ModelActionModel,
    /// `create`, `update` or `delete`.
    pub action: Action,
    /// Old and new snapshots and the changes between them.
    pub content: ModelActionContent,
    /// Which instance.
    pub instance: ModelActionInstance,
    /// When the action was recorded (UTC, taken per action, not once per request).
    #[serde(with = "utc")]
    pub timestamp: DateTime<Utc>,
    /// The access during which it happened; none outside a request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<ObjectId>,
    /// The process that made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ObjectId>,
}

impl AuditDocument for ModelAction {
    const COLLECTION: Collection = Collection::ModelAction;
    fn id(&self) -> ObjectId {
        self.id
    }
}

impl ModelAction {
    /// The changed fields (`content.changes`).
    pub fn changes(&self) -> &Document {
        &self.content.changes
    }

    /// Replaces `content.changes`.
    pub fn set_changes(&mut self, changes: Document) {
        self.content.changes = changes;
    }

    /// Empties `content.changes` (the original's `del changes`, which then read `{}`).
    pub fn clear_changes(&mut self) {
        self.content.changes = Document::new();
    }

    /// `{action} instance {id} of model {name} from app {app} ({timestamp})`, the original's text.
    pub fn verbose_str(&self) -> String {
        format!(
            "{} instance {} of model {} from app {} ({})",
            self.action,
            self.instance.id,
            self.model.name,
            self.model.app,
            python_datetime(&self.timestamp)
        )
    }

    /// The instance behind `instance.id`, through the application's lookup (`None` when gone).
    pub fn get_instance<L: InstanceLookup + ?Sized>(&self, lookup: &L) -> Option<L::Instance> {
        lookup.find_instance(&self.model.full_name, &self.instance.id)
    }
}

/// `ModelAction{full_name(id), action:action, time:timestamp}`, the original's text.
impl fmt::Display for ModelAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ModelAction{{{}({}), action:{}, time:{}}}",
            self.model.full_name,
            self.instance.id,
            self.action,
            python_datetime(&self.timestamp)
        )
    }
}

/// How [`ModelAction::get_instance`] loads the application's instance for a stored id.
pub trait InstanceLookup {
    /// What the lookup returns.
    type Instance;
    /// The instance of model `full_name` with this id, or `None`.
    fn find_instance(&self, full_name: &str, id: &str) -> Option<Self::Instance>;
}

/// What was done to the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A new instance.
    Create,
    /// A changed instance.
    Update,
    /// A removed instance.
    Delete,
}

impl Action {
    /// The stored string.
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "create" => Ok(Action::Create),
            "update" => Ok(Action::Update),
            "delete" => Ok(Action::Delete),
            other => Err(format!(
                "unknown action `{other}`: expected create, update or delete"
            )),
        }
    }
}

/// The model part of a [`ModelAction`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ModelActionModel {
    /// The model's Rust path.
    pub full_name: String,
    /// The crate or the `#[audit(app = "...")]` override.
    pub app: String,
    /// The type name.
    pub name: String,
}

/// The content part of a [`ModelAction`]: snapshots and changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ModelActionContent {
    /// The snapshot before the action (`{}` for a create).
    #[serde(default, deserialize_with = "null_default")]
    pub old: Document,
    /// The snapshot after the action (`{}` for a delete).
    #[serde(default, deserialize_with = "null_default")]
    pub new: Document,
    /// `{field: {old, new}}` for every field changed, added or removed.
    #[serde(default, deserialize_with = "null_default")]
    pub changes: Document,
}

/// The instance part of a [`ModelAction`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ModelActionInstance {
    /// The instance id, always a string (as the original stored it).
    pub id: String,
    /// The instance's `Display`, full Unicode (the original truncated it to ASCII).
    pub description: String,
}
