//! Status: the conditions for what was observed (`status::compute`, pure), written only when they
//! changed, with an Event per condition transition (not for a condition that starts out on its way).

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;

use super::{Context, publish_event};
use crate::apply::{Error, Result};
use crate::crd::{PopUpStore, PopUpStoreStatus};
use crate::render::FIELD_MANAGER;
use crate::status::{self, Observations, reason};

/// Computes and writes the status; returns whether the store is Ready.
pub(super) async fn update_status(ctx: &Context, store: &PopUpStore, observations: &Observations) -> Result<bool> {
    let new = status::compute(store.status.as_ref(), observations, Timestamp::now());
    let ready = status::is_ready(&new);
    publish_status(ctx, store, new).await?;
    Ok(ready)
}

/// Writes the status when it changed, and publishes an Event per condition transition.
pub(super) async fn publish_status(ctx: &Context, store: &PopUpStore, new: PopUpStoreStatus) -> Result<()> {
    if store.status.as_ref() == Some(&new) {
        return Ok(());
    }
    let name = store.name_any();
    let api: Api<PopUpStore> = Api::namespaced(ctx.client.clone(), &store.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "popup.dev/v1alpha1",
        "kind": "PopUpStore",
        "status": new,
    });
    match api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await {
        Ok(_) => {}
        // The store was deleted while this reconcile ran: nothing is left to report on.
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(source) => return Err(Error::new("updating the status of", "PopUpStore", name, source)),
    }
    for t in status::transitions(store.status.as_ref(), &new) {
        // A condition that is merely still on its way (Starting, Running…) is not worth a Warning.
        let warning = !t.ok && !reason::is_progress(&t.reason);
        let type_ = if warning { EventType::Warning } else { EventType::Normal };
        let reason = format!("{}{}", t.type_, if t.ok { "" } else { "False" });
        publish_event(ctx, store, type_, &reason, format!("{}: {}", t.reason, t.message)).await;
    }
    Ok(())
}
