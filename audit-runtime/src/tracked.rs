//! [`Tracked`]: a model loaded through a data layer without hooks (sqlx, diesel, hand-written
//! SQL), snapshotted as it is loaded, so that recording its update never needs a copy of the old
//! value kept by hand. SeaORM applications get the same without a guard, from the hooks of the
//! `sea-orm` feature.

use crate::document::Action;
use crate::model::{diff_snapshots, Audited, Snapshot};
use crate::Auditor;
use bson::oid::ObjectId;

/// A model as loaded from the database, with the snapshot taken then.
///
/// Change it in place (it dereferences to the model), write it with your data layer, and once the
/// write has committed call [`saved`](Tracked::saved): the update is recorded from the state that
/// was loaded to the current one, and nothing is recorded when nothing changed.
///
/// ```no_run
/// # #[derive(Clone, audit_runtime::Audited)]
/// # struct Poll { id: i64, question: String }
/// # impl std::fmt::Display for Poll {
/// #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(&self.question) }
/// # }
/// # async fn load_poll(id: i64) -> Poll { Poll { id, question: "Why?".into() } }
/// # async fn store_poll(poll: &Poll) {}
/// # async fn handler(auditor: audit_runtime::Auditor) {
/// use audit_runtime::Tracked;
///
/// let mut poll = Tracked::new(load_poll(7).await);
/// poll.question = "What's new?".into();
/// store_poll(&poll).await; // e.g. an sqlx UPDATE, committed
/// poll.saved(&auditor).await; // old = as loaded, new = as stored
/// # }
/// ```
///
/// When the data layer hands back the stored row (`UPDATE ... RETURNING *`), put it in first
/// (`*poll = returned;`) so that what is recorded is exactly what was stored.
pub struct Tracked<T: Audited> {
    value: T,
    /// The stored state the next record starts from: as loaded, then as last saved.
    stored: Snapshot,
}

impl<T: Audited> Tracked<T> {
    /// Tracks `value`, as just loaded from the database.
    pub fn new(value: T) -> Self {
        let stored = value.audit_snapshot();
        Tracked { value, stored }
    }

    /// True when the value differs from its stored state (as loaded, or as last saved).
    pub fn is_changed(&self) -> bool {
        !diff_snapshots(&self.stored, &self.value.audit_snapshot()).is_empty()
    }

    /// Records the update from the stored state to the current value: call it after the write has
    /// committed, so that a rolled-back write is never recorded. Records nothing, and returns
    /// `None`, when nothing changed or `T` is not recorded. The current value becomes the state
    /// the next save starts from.
    pub async fn saved(&mut self, auditor: &Auditor) -> Option<ObjectId> {
        let new = self.value.audit_snapshot();
        if diff_snapshots(&self.stored, &new).is_empty() {
            return None;
        }
        let old = std::mem::replace(&mut self.stored, new.clone());
        auditor
            .record_action(Action::Update, old, new, &self.value)
            .await
    }

    /// Records the deletion of the model, as it was stored: call it after the delete has
    /// committed.
    pub async fn deleted(self, auditor: &Auditor) -> Option<ObjectId> {
        auditor
            .record_action(
                Action::Delete,
                self.stored,
                Snapshot::default(),
                &self.value,
            )
            .await
    }

    /// The model, no longer tracked.
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T: Audited> std::ops::Deref for Tracked<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: Audited> std::ops::DerefMut for Tracked<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T: Audited + std::fmt::Debug> std::fmt::Debug for Tracked<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked")
            .field("value", &self.value)
            .field("changed", &self.is_changed())
            .finish()
    }
}
