//! The model-action API: record a create, an update or a delete of an [`Audited`] value, linked to
//! the access of the request being served. It sits above the request context (which knows the
//! current access) and the auditor (which stores the action).

use crate::auditor::Auditor;
use crate::context;
use crate::document::{
    Action, ModelAction, ModelActionContent, ModelActionInstance, ModelActionModel,
};
use crate::model::{diff_snapshots, finalize_masks, Audited, Snapshot};
use crate::registry;
use bson::oid::ObjectId;
use chrono::Utc;

impl Auditor {
    /// Records the creation of `obj`.
    pub async fn record_create<T: Audited>(&self, obj: &T) -> Option<ObjectId> {
        self.record_action(
            Action::Create,
            Snapshot::default(),
            obj.audit_snapshot(),
            obj,
        )
        .await
    }

    /// Records an update from `old` to `new` (the previous value, as loaded before the update).
    pub async fn record_update<T: Audited>(&self, old: &T, new: &T) -> Option<ObjectId> {
        self.record_action(
            Action::Update,
            old.audit_snapshot(),
            new.audit_snapshot(),
            new,
        )
        .await
    }

    /// Records an update of `new`, loading its previous value with `load_old` first (the stored
    /// state before the update). Without a previous value it is recorded as a create.
    pub async fn record_update_loading<T, F>(&self, new: &T, load_old: F) -> Option<ObjectId>
    where
        T: Audited,
        F: std::future::Future<Output = Option<T>>,
    {
        match load_old.await {
            Some(old) => self.record_update(&old, new).await,
            None => self.record_create(new).await,
        }
    }

    /// Records the deletion of `obj` (call it after the delete committed, so a rolled-back delete is never recorded).
    pub async fn record_delete<T: Audited>(&self, obj: &T) -> Option<ObjectId> {
        self.record_action(
            Action::Delete,
            obj.audit_snapshot(),
            Snapshot::default(),
            obj,
        )
        .await
    }

    pub(crate) async fn record_action<T: Audited>(
        &self,
        action: Action,
        old: Snapshot,
        new: Snapshot,
        obj: &T,
    ) -> Option<ObjectId> {
        let model_action = self.model_action(action, old, new, obj)?;
        let id = model_action.id;
        self.record_model_action(model_action).await;
        Some(id)
    }

    /// True when this auditor records actions of `T` (it is active and `T` is among the logged
    /// models): callers check it before loading anything for a record.
    pub(crate) fn records<T: Audited>(&self) -> bool {
        self.is_active() && registry::is_recorded(T::MODEL.full_name, self.config())
    }

    /// The model action, built now (linked to the current access, timed now) but not stored:
    /// one that waits for its transaction to commit is stored later, as it was at the statement.
    /// `None` when this auditor does not record `T`.
    pub(crate) fn model_action<T: Audited>(
        &self,
        action: Action,
        old: Snapshot,
        new: Snapshot,
        obj: &T,
    ) -> Option<ModelAction> {
        if !self.records::<T>() {
            return None;
        }
        let mut changes = diff_snapshots(&old, &new).into_document();
        let (mut old, mut new) = (old.into_document(), new.into_document());
        for d in [&mut old, &mut new, &mut changes] {
            finalize_masks(d);
        }
        Some(ModelAction {
            id: ObjectId::new(),
            model: ModelActionModel {
                full_name: T::MODEL.full_name.to_owned(),
                app: T::MODEL.app.to_owned(),
                name: T::MODEL.name.to_owned(),
            },
            action,
            content: ModelActionContent { old, new, changes },
            instance: ModelActionInstance {
                id: obj.audit_id().unwrap_or_default(),
                description: obj.audit_description(),
            },
            timestamp: Utc::now(),
            access: context::current_access_id(),
            process: None,
        })
    }
}

/// Records the creation of `obj` through the current auditor (the request's, else the global).
pub async fn record_create<T: Audited>(obj: &T) -> Option<ObjectId> {
    Auditor::current()?.record_create(obj).await
}

/// Records an update through the current auditor.
pub async fn record_update<T: Audited>(old: &T, new: &T) -> Option<ObjectId> {
    Auditor::current()?.record_update(old, new).await
}

/// Records a deletion through the current auditor.
pub async fn record_delete<T: Audited>(obj: &T) -> Option<ObjectId> {
    Auditor::current()?.record_delete(obj).await
}
