//! Validate: the spec as the operator can use it (`render::validate`, pure), or `Ready=False/InvalidSpec`.

use k8s_openapi::jiff::Timestamp;

use super::{Context, update_status};
use crate::apply::Result;
use crate::crd::PopUpStore;
use crate::render::{self, ValidatedStore};
use crate::status;

/// `None` when the spec is unusable: the status says why, and nothing will fix it until the user edits
/// the store.
pub(super) async fn validate(ctx: &Context, store: &PopUpStore) -> Result<Option<ValidatedStore>> {
    match render::validate(store) {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            let generation = store.metadata.generation;
            let new = status::invalid_spec(store.status.as_ref(), generation, &e.to_string(), Timestamp::now());
            update_status::publish_status(ctx, store, new).await?;
            Ok(None)
        }
    }
}
