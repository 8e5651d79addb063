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
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::render::{APPLIED_HASH_ANNOTATION, FIELD_MANAGER, checksum_of};

/// An API call on a child that failed: what was being done, to which object, and the API server's answer.
#[derive(Debug, thiserror::Error)]
#[error("{doing} {kind} {name}: {source}")]
pub struct Error {
    /// "reading", "applying", "creating", "deleting", "listing", "updating the status of".
    pub doing: &'static str,
    pub kind: &'static str,
    pub name: String,
    pub source: kube::Error,
}

impl Error {
    pub fn new(doing: &'static str, kind: &'static str, name: impl Into<String>, source: kube::Error) -> Self {
        Error { doing, kind, name: name.into(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a namespaced child must be to go through [`apply`].
pub trait Child:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug
{
}
impl<K> Child for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug
{
}

pub fn kind<K: Child>() -> &'static str {
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

/// What the controller's watch cache knows of the live object (`controller::cache::seen`).
#[derive(Debug)]
pub enum Seen<K> {
    /// The live object as the watch last saw it.
    Live(Arc<K>),
    /// The watch has listed everything and this object is not there.
    Absent,
    /// No watch to ask (yet): read the object from the API server.
    Unknown,
}

/// Whether `live` was applied from exactly the content that hashes to `hash`.
fn carries<M: Resource>(live: &M, hash: &str) -> bool {
    live.annotations().get(APPLIED_HASH_ANNOTATION).map(String::as_str) == Some(hash)
}

/// Applies `desired` unless the live object already carries its hash; returns the live object. What the
/// watch has seen saves requests: a live object with the hash costs none, a different or absent one only
/// the apply (redundant at worst, when the watch lags behind our own last apply).
pub async fn apply<K: Child>(client: &Client, seen: Seen<K>, mut desired: K) -> Result<K> {
    let hash = stamp(&mut desired);
    let name = desired.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), &desired.namespace().unwrap_or_default());
    match seen {
        Seen::Live(live) if carries(&*live, &hash) => return Ok(Arc::unwrap_or_clone(live)),
        Seen::Live(_) | Seen::Absent => {}
        Seen::Unknown => {
            let live = api.get_opt(&name).await.map_err(|source| Error::new("reading", kind::<K>(), &name, source))?;
            if let Some(live) = live
                && carries(&live, &hash)
            {
                return Ok(live);
            }
        }
    }
    tracing::debug!(kind = kind::<K>(), %name, "applying");
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&desired))
        .await
        .map_err(|source| Error::new("applying", kind::<K>(), name, source))
}

/// [`apply`] for a child whose live state the reconcile does not read, so the watch may keep its metadata only.
pub async fn apply_unread<K: Child, M: Resource>(client: &Client, seen: Seen<M>, mut desired: K) -> Result<()> {
    let hash = stamp(&mut desired);
    let seen = match seen {
        Seen::Live(live) if carries(&*live, &hash) => return Ok(()),
        Seen::Live(_) | Seen::Absent => Seen::Absent,
        Seen::Unknown => Seen::Unknown,
    };
    apply(client, seen, desired).await.map(drop)
}

/// Creates `desired` when absent and never changes it afterwards: for immutable objects (Jobs).
pub async fn create_if_missing<K: Child>(client: &Client, seen: Seen<K>, mut desired: K) -> Result<K> {
    let name = desired.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), &desired.namespace().unwrap_or_default());
    match seen {
        Seen::Live(live) => return Ok(Arc::unwrap_or_clone(live)),
        Seen::Absent => {}
        Seen::Unknown => {
            if let Some(live) =
                api.get_opt(&name).await.map_err(|source| Error::new("reading", kind::<K>(), &name, source))?
            {
                return Ok(live);
            }
        }
    }
    stamp(&mut desired);
    let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
    match api.create(&params, &desired).await {
        Ok(created) => Ok(created),
        // Created by a concurrent reconcile, or before the watch saw it: that one is as good.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            api.get(&name).await.map_err(|source| Error::new("reading", kind::<K>(), name, source))
        }
        Err(source) => Err(Error::new("creating", kind::<K>(), name, source)),
    }
}

/// Reads an object, `None` when it does not exist.
pub async fn get<K: Child>(client: &Client, namespace: &str, name: &str) -> Result<Option<K>> {
    Api::<K>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|source| Error::new("reading", kind::<K>(), name, source))
}

/// Deletes `name` if it exists and is controlled by the owner with `owner_uid` (never an object of
/// someone else that happens to have the name); returns whether it deleted. `seen`: what the watch cache
/// knows of it (its metadata is enough); only a live object saves the read.
pub async fn delete_if_owned<K: Child, M: Resource>(
    client: &Client,
    seen: Seen<M>,
    namespace: &str,
    name: &str,
    owner_uid: &str,
) -> Result<bool> {
    let controlled_by_owner =
        |refs: &[OwnerReference]| refs.iter().any(|o| o.uid == owner_uid && o.controller == Some(true));
    let owned = match seen {
        Seen::Live(live) => controlled_by_owner(live.owner_references()),
        // A child created just before the spec changed may not have reached the cache yet: only the API
        // server can say it is not there (this runs after spec changes only).
        Seen::Absent | Seen::Unknown => {
            get::<K>(client, namespace, name).await?.is_some_and(|l| controlled_by_owner(l.owner_references()))
        }
    };
    if !owned {
        return Ok(false);
    }
    match Api::<K>::namespaced(client.clone(), namespace).delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(source) => Err(Error::new("deleting", kind::<K>(), name, source)),
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
    let list = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|source| Error::new("listing", kind::<K>(), selector, source))?;
    let mut deleted = Vec::new();
    for obj in list.items {
        let name = obj.name_any();
        if name == keep {
            continue;
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => deleted.push(name),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => return Err(Error::new("deleting", kind::<K>(), name, source)),
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
