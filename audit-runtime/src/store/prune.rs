//! Which processes a ranged removal of records may take with them.
//!
//! Accesses and model actions reference the process that made them. Deleting records by date
//! (`audit drop FROM TO`) may leave processes that nothing references any more; deleting a process
//! that a remaining record still points to would leave that record dangling. The rule that tells
//! the two apart lives here, beside the store, so every removal applies the same one.

use super::{CmpOp, Filter, FindOptions, Store, StoreResult};
use crate::document::Collection;
use bson::oid::ObjectId;
use bson::Bson;
use chrono::{DateTime, Utc};

impl Store {
    /// The processes that may be deleted together with the accesses and model actions dated
    /// from `from` to `to` (both included).
    ///
    /// The rule: a process goes when it was created in that range **and** no access or model
    /// action dated outside the range (a record that stays) references it. A process created
    /// outside the range always stays, even when every record referencing it goes; a process
    /// created inside it stays while one remaining record references it.
    ///
    /// This only reads: the caller deletes the returned ids (after sealing the removal).
    pub async fn orphaned_processes(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<ObjectId>> {
        let at = |t: DateTime<Utc>| bson::DateTime::from_chrono(t);
        let outside = |c: Collection| {
            Filter::Or(vec![
                Filter::Cmp(c.date_field().into(), CmpOp::Lt, Bson::DateTime(at(from))),
                Filter::Cmp(c.date_field().into(), CmpOp::Gt, Bson::DateTime(at(to))),
            ])
        };
        let created_in_range = Filter::between(Collection::Process.date_field(), at(from), at(to));
        let candidates = self
            .find_raw(Collection::Process, &FindOptions::new(created_in_range))
            .await?;
        let mut orphans = Vec::new();
        for p in candidates {
            let Ok(id) = p.get_object_id("_id") else {
                continue;
            };
            let mut referenced = false;
            for c in [Collection::Access, Collection::ModelAction] {
                let staying = Filter::And(vec![Filter::eq("process", id), outside(c)]);
                if self.count(c, &staying).await? > 0 {
                    referenced = true;
                    break;
                }
            }
            if !referenced {
                orphans.push(id);
            }
        }
        Ok(orphans)
    }
}
