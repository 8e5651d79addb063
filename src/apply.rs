//! Writing children: server-side apply with one field manager, skipped when nothing changed.
//!
//! Each applied object carries a hash of what the operator rendered (`popup.dev/applied-hash`). When the
//! live object already has the hash of the desired one, nothing is sent; when the controller's watch
//! cache shows that hash, nothing is read either, so a steady-state reconcile makes no request. The
//! trade-off: a hand edit of a field we manage is reverted on the next change of the store (or when the
//! object is deleted, which recreates it), not instantly.

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::controller::{Error, Result};
use crate::render::{APPLIED_HASH_ANNOTATION, FIELD_MANAGER, checksum_of};

/// What a namespaced child must be to go through [`apply`].
pub trait Child:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug
{
}
impl<K> Child for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug
{
}

fn kind<K: Child>() -> &'static str {
    // k8s-openapi types name their kind with a &'static str; the fallback only serves error messages.
    match K::kind(&()) {
        std::borrow::Cow::Borrowed(s) => s,
        std::borrow::Cow::Owned(_) => "object",
    }
}

/// Stamps `desired` with the hash of its content.
pub fn stamp<K: Child>(desired: &mut K) -> String {
    desired.annotations_mut().remove(APPLIED_HASH_ANNOTATION);
    let hash = checksum_of(&*desired)[..16].to_string();
    desired.annotations_mut().insert(APPLIED_HASH_ANNOTATION.into(), hash.clone());
    hash
}

/// Whether `live` was applied from exactly the content that hashes to `hash`.
fn carries<M: Resource>(live: &M, hash: &str) -> bool {
    live.annotations().get(APPLIED_HASH_ANNOTATION).map(String::as_str) == Some(hash)
}

/// Applies `desired` unless the live object already carries its hash; returns the live object. `cached` is
/// the live object as the watch last saw it: when it carries the hash, not even a read is sent.
pub async fn apply<K: Child>(client: &Client, cached: Option<Arc<K>>, mut desired: K) -> Result<K> {
    let hash = stamp(&mut desired);
    if let Some(live) = cached.filter(|live| carries(&**live, &hash)) {
        return Ok(Arc::unwrap_or_clone(live));
    }
    let name = desired.name_any();
    let namespace = desired.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let live =
        api.get_opt(&name).await.map_err(|source| Error::Read { kind: kind::<K>(), name: name.clone(), source })?;
    if let Some(live) = live
        && carries(&live, &hash)
    {
        return Ok(live);
    }
    tracing::debug!(kind = kind::<K>(), %name, "applying");
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&desired))
        .await
        .map_err(|source| Error::Apply { kind: kind::<K>(), name, source })
}

/// [`apply`] for a child whose live state the reconcile does not read: `cached` may be metadata only.
pub async fn apply_unread<K: Child, M: Resource>(
    client: &Client,
    cached: Option<Arc<M>>,
    mut desired: K,
) -> Result<()> {
    let hash = stamp(&mut desired);
    if cached.is_some_and(|live| carries(&*live, &hash)) {
        return Ok(());
    }
    apply(client, None, desired).await.map(drop)
}

/// Creates `desired` when absent and never changes it afterwards: for immutable objects (Jobs). `cached`:
/// the live object as the watch last saw it, if it did.
pub async fn create_if_missing<K: Child>(client: &Client, cached: Option<Arc<K>>, mut desired: K) -> Result<K> {
    if let Some(live) = cached {
        return Ok(Arc::unwrap_or_clone(live));
    }
    let name = desired.name_any();
    let namespace = desired.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    if let Some(live) =
        api.get_opt(&name).await.map_err(|source| Error::Read { kind: kind::<K>(), name: name.clone(), source })?
    {
        return Ok(live);
    }
    stamp(&mut desired);
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    match api.create(&params, &desired).await {
        Ok(created) => Ok(created),
        // Created by a concurrent reconcile between our read and our write: that one is as good.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            api.get(&name).await.map_err(|source| Error::Read { kind: kind::<K>(), name, source })
        }
        Err(source) => Err(Error::Apply { kind: kind::<K>(), name, source }),
    }
}

/// Reads an object, `None` when it does not exist.
pub async fn get<K: Child>(client: &Client, namespace: &str, name: &str) -> Result<Option<K>> {
    Api::<K>::namespaced(client.clone(), namespace).get_opt(name).await.map_err(|source| Error::Read {
        kind: kind::<K>(),
        name: name.to_string(),
        source,
    })
}

/// Deletes `name` if it exists and is controlled by the owner with `owner_uid` (never an object of
/// someone else that happens to have the name); returns whether it deleted.
pub async fn delete_if_owned<K: Child>(client: &Client, namespace: &str, name: &str, owner_uid: &str) -> Result<bool> {
    let Some(live) = get::<K>(client, namespace, name).await? else { return Ok(false) };
    let owned = live.owner_references().iter().any(|o| o.uid == owner_uid && o.controller == Some(true));
    if !owned {
        return Ok(false);
    }
    match Api::<K>::namespaced(client.clone(), namespace).delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(source) => Err(Error::Apply { kind: kind::<K>(), name: name.to_string(), source }),
    }
}

/// Deletes every object matching `selector` except `keep`; returns the names deleted.
pub async fn delete_others<K: Child>(
    client: &Client,
    namespace: &str,
    selector: &str,
    keep: &str,
) -> Result<Vec<String>> {
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let list = api.list(&ListParams::default().labels(selector)).await.map_err(|source| Error::Read {
        kind: kind::<K>(),
        name: selector.to_string(),
        source,
    })?;
    let mut deleted = Vec::new();
    for obj in list.items {
        let name = obj.name_any();
        if name == keep {
            continue;
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => deleted.push(name),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => return Err(Error::Apply { kind: kind::<K>(), name, source }),
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    #[test]
    fn stamp_is_stable_and_content_sensitive() {
        let mut a = ConfigMap::default();
        a.metadata.name = Some("x".into());
        let h1 = stamp(&mut a);
        // Stamping an already stamped object gives the same hash (the annotation itself is not hashed).
        assert_eq!(stamp(&mut a), h1);
        let mut b = a.clone();
        b.data = Some([("k".to_string(), "v".to_string())].into());
        assert_ne!(stamp(&mut b), h1);
        assert_eq!(kind::<ConfigMap>(), "ConfigMap");
    }
}
