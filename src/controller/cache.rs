//! The controller's view of the cluster between reconciles: reflector stores fed by the watches the
//! controller runs anyway (its owned children, the Redis pods, every other Secret's metadata), so a
//! reconcile of an unchanged store asks the API server nothing.
//!
//! The cache only ever saves a request, it never decides alone: an object it has not seen (not synced
//! yet, just created) is read from the API server as before. A watch writes an object into its store
//! before it triggers the reconcile, so a reconcile caused by a change sees that change.
//!
//! What is kept is what a reconcile reads, and no more, because at a thousand stores every object
//! counts (docs/benchmarks.md): each child as [`Cached`] (its name, owner, generation and the operator's
//! own annotations, plus the Secrets' data; the workloads' replicas, template annotations and status;
//! the Redis pods' status and store), without uid (but the Grafana Deployment's), resourceVersion,
//! labels or `managedFields`; and only name and resourceVersion of every Secret that is not the
//! operator's.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::runtime::{WatchStreamExt, reflector::store::Writer};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::cached::{Cached, Slim};
use crate::apply::Result;
use crate::apply::{self, Child, Seen};

/// Selects the operator's own children (the `owns_stream` watch of each kind).
pub const OWNED: &str = "app.kubernetes.io/managed-by=popup-operator";
/// Selects every other object: the Secrets a store may name that the operator did not write (its own are
/// in the owned watch already, with their data).
pub const NOT_OWNED: &str = "app.kubernetes.io/managed-by!=popup-operator";
/// Selects the Redis pods of every store (their StatefulSet's pod template labels).
pub const REDIS_PODS: &str = "app.kubernetes.io/managed-by=popup-operator,app.kubernetes.io/component=redis";

/// Declares [`Cache`] and its [`Writers`] from one list of what is watched, so that a new kind of
/// cached child is one line here (and its watch in `controller::watching`).
macro_rules! watched_stores {
    ($($(#[$doc:meta])* $field:ident: $kind:ty,)*) => {
        /// The stores a reconcile reads from. [`Cache::empty`] has none synced, so everything is read
        /// from the API server (the reconcile tests against a fake API server use that).
        #[derive(Clone)]
        pub struct Cache {
            $($(#[$doc])* pub $field: Store<$kind>,)*
            /// The user's password Secrets as last read (each with the resourceVersion it was read at).
            user_secrets: Arc<Mutex<HashMap<ObjectRef<Secret>, Arc<Secret>>>>,
            /// Secrets this process wrote that the watch of its own Secrets has not shown yet: while one
            /// is here, the cache's "absent" may be the lag behind our own write.
            written_secrets: Arc<Mutex<HashSet<ObjectRef<Secret>>>>,
        }

        /// The writing ends of a [`Cache`]'s stores, handed to the watches that feed them (see
        /// `controller::run_one`).
        pub struct Writers {
            $(pub $field: Writer<$kind>,)*
        }

        impl Cache {
            pub fn new() -> (Cache, Writers) {
                $(let $field = reflector::store();)*
                let cache = Cache {
                    $($field: $field.0,)*
                    user_secrets: Default::default(),
                    written_secrets: Default::default(),
                };
                (cache, Writers { $($field: $field.1,)* })
            }
        }
    };
}

watched_stores! {
    stateful_sets: Cached<StatefulSet>,
    deployments: Cached<Deployment>,
    jobs: Cached<Job>,
    secrets: Cached<Secret>,
    config_maps: Cached<PartialObjectMeta<ConfigMap>>,
    services: Cached<PartialObjectMeta<Service>>,
    network_policies: Cached<PartialObjectMeta<NetworkPolicy>>,
    redis_pods: Cached<Pod>,
    /// Every Secret of the scope but the operator's, name and resourceVersion only: the user's password Secrets.
    all_secrets: PartialObjectMeta<Secret>,
}

impl Cache {
    /// A cache that never fills: every read goes to the API server.
    pub fn empty() -> Cache {
        Cache::new().0
    }

    /// The user's password Secret `name`: from the operator's own Secrets when it is one of them; else
    /// from the memo while the watch reports the resourceVersion it was read at, from the API server
    /// otherwise; `None` when it does not exist.
    pub async fn user_secret(&self, client: &Client, namespace: &str, name: &str) -> Result<Option<Arc<Secret>>> {
        let key = ObjectRef::<Secret>::new(name).within(namespace);
        if let Some(own) = self.secrets.get(&ObjectRef::new(name).within(namespace)) {
            return Ok(Some(Arc::new(own.full())));
        }
        if self.secrets_synced() {
            let Some(meta) = self.all_secrets.get(&ObjectRef::new(name).within(namespace)) else {
                return Ok(None);
            };
            let memo = self.user_secrets.lock().expect("not poisoned").get(&key).cloned();
            if let Some(secret) = memo.filter(|s| s.resource_version() == meta.resource_version()) {
                return Ok(Some(secret));
            }
        }
        let read = apply::get::<Secret>(client, namespace, name).await?.map(Arc::new);
        let mut memo = self.user_secrets.lock().expect("not poisoned");
        match &read {
            Some(secret) => memo.insert(key, secret.clone()),
            None => memo.remove(&key),
        };
        Ok(read)
    }

    /// Whether both Secret watches have listed everything: a Secret in neither then does not exist.
    fn secrets_synced(&self) -> bool {
        synced(&self.secrets) && synced(&self.all_secrets)
    }
}

impl Cache {
    /// Notes that this process is about to write the Secret `namespace`/`name`. Entries the watch has
    /// shown since are let go now and then, so the memo holds only writes still on their way.
    pub fn writing_secret(&self, namespace: &str, name: &str) {
        let mut written = self.written_secrets.lock().expect("not poisoned");
        written.insert(ObjectRef::new(name).within(namespace));
        if written.len() > 64 && synced(&self.secrets) {
            written.retain(|k| {
                let seen = ObjectRef::new(&k.name).within(k.namespace.as_deref().unwrap_or_default());
                self.secrets.get(&seen).is_none()
            });
        }
    }

    /// An operator-owned Secret: from the cache; else, for a store that has never had a status (a new
    /// one), `None` without a request when both Secret watches are synced, neither has it, and this
    /// process has not written it (the one lag that could hide it: a failed first reconcile's own
    /// write); else from the API server. So a new store's password Secrets cost no 404 reads, and a
    /// password is still never replaced on the word of a cache that may lag behind our own write.
    pub async fn owned_secret(
        &self,
        client: &Client,
        namespace: &str,
        name: &str,
        new_store: bool,
    ) -> Result<Option<Secret>> {
        let key = ObjectRef::new(name).within(namespace);
        if let Some(secret) = self.secrets.get(&ObjectRef::new(name).within(namespace)) {
            self.written_secrets.lock().expect("not poisoned").remove(&key); // shown: no longer a lag to fear
            return Ok(Some(secret.full()));
        }
        let foreign = self.all_secrets.get(&ObjectRef::new(name).within(namespace)).is_some();
        if new_store
            && self.secrets_synced()
            && !foreign
            && !self.written_secrets.lock().expect("not poisoned").contains(&key)
        {
            return Ok(None);
        }
        apply::get::<Secret>(client, namespace, name).await
    }
}

/// Whether the store has had its first full list (a miss then means "does not exist").
pub fn synced<K>(store: &Store<K>) -> bool
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

/// What `store` knows of the object of the same kind, namespace and name as `obj`, typed again.
pub fn seen<K, C>(store: &Store<Cached<C>>, obj: &K) -> Seen<C>
where
    K: Resource,
    C: Slim,
{
    seen_named(store, &obj.namespace().unwrap_or_default(), &obj.name_any())
}

/// What `store` knows of the object `namespace`/`name`, typed again.
pub fn seen_named<C: Slim>(store: &Store<Cached<C>>, namespace: &str, name: &str) -> Seen<C> {
    match store.get(&ObjectRef::new(name).within(namespace)) {
        Some(live) => Seen::Live(Arc::new(live.full())),
        None if synced(store) => Seen::Absent,
        None => Seen::Unknown,
    }
}

/// `name` from `store`, or from the API server when the store has not seen it.
pub async fn get_or_read<K: Child + Slim>(
    store: &Store<Cached<K>>,
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<K>> {
    match store.get(&ObjectRef::new(name).within(namespace)) {
        Some(obj) => Ok(Some(obj.full())),
        None => apply::get::<K>(client, namespace, name).await,
    }
}

/// A watch of `api` that fills `writer`'s store (trimmed by `trim`) and yields every object it touched, as
/// the trigger stream of `Controller::owns_stream`/`watches_stream`. An `Api<PartialObjectMeta<K>>`
/// watches metadata only.
pub fn objects<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: Writer<K>,
    trim: fn(&mut K),
) -> impl Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    watcher(api, config).default_backoff().modify(trim).reflect(writer).touched_objects().boxed()
}

/// What every cached object loses: who wrote which field is the API server's business, not ours.
pub fn no_managed_fields<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
}

/// What the watch needed and the cache does not keep (see [`Cached::settle`]).
pub fn settle<K: Slim>(obj: &mut Cached<K>) {
    obj.settle();
}

/// Another Secret of the scope as the cache keeps it: enough to see that it changed.
pub fn name_and_version_only(secret: &mut PartialObjectMeta<Secret>) {
    secret.types = None;
    let meta = &mut secret.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    meta.labels = None;
    meta.owner_references = None;
    meta.uid = None;
}

#[cfg(test)]
mod owned_secret_tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::runtime::watcher::Event;

    use super::*;

    /// A client whose every request fails: an answer without error means no request was made.
    fn no_server() -> Client {
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        Client::try_from(config).unwrap()
    }

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta { name: Some(name.into()), namespace: Some("sales".into()), ..Default::default() }
    }

    fn foreign(name: &str) -> PartialObjectMeta<Secret> {
        PartialObjectMeta { metadata: meta(name), ..Default::default() }
    }

    fn own(name: &str) -> Cached<Secret> {
        Cached::of(Secret { metadata: meta(name), ..Default::default() })
    }

    /// Both Secret watches list what they have: the operator's own Secrets and every other one.
    fn sync(writers: &mut Writers, own_secrets: &[&str], foreign_secrets: &[&str]) {
        writers.secrets.apply_watcher_event(&Event::Init);
        for name in own_secrets {
            writers.secrets.apply_watcher_event(&Event::InitApply(own(name)));
        }
        writers.secrets.apply_watcher_event(&Event::InitDone);
        writers.all_secrets.apply_watcher_event(&Event::Init);
        for name in foreign_secrets {
            writers.all_secrets.apply_watcher_event(&Event::InitApply(foreign(name)));
        }
        writers.all_secrets.apply_watcher_event(&Event::InitDone);
    }

    #[tokio::test]
    async fn a_new_stores_secret_is_absent_without_a_read_unless_our_own_write_may_be_on_its_way() {
        let (cache, mut writers) = Cache::new();
        let client = no_server();
        // Before the Secret watches have listed them, absence means nothing: read.
        assert!(cache.owned_secret(&client, "sales", "shop-redis", true).await.is_err());
        sync(&mut writers, &["other-redis"], &["other"]);
        assert!(cache.owned_secret(&client, "sales", "shop-redis", true).await.unwrap().is_none(), "no request");
        // A store that had a status: its Secret may have been deleted or may lag; always read.
        assert!(cache.owned_secret(&client, "sales", "shop-redis", false).await.is_err());
        // Our own write that the watch has not shown yet: read, never trust the absence.
        cache.writing_secret("sales", "shop-redis");
        assert!(cache.owned_secret(&client, "sales", "shop-redis", true).await.is_err());
        // Once the watch shows it, it comes from the cache and the memo lets it go.
        writers.secrets.apply_watcher_event(&Event::Apply(own("shop-redis")));
        assert!(cache.owned_secret(&client, "sales", "shop-redis", true).await.unwrap().is_some(), "no request");
        assert!(cache.written_secrets.lock().unwrap().is_empty());
        // A Secret of that name that is not the operator's: read (the apply will then say whose it is).
        writers.all_secrets.apply_watcher_event(&Event::Apply(foreign("shop-grafana")));
        assert!(cache.owned_secret(&client, "sales", "shop-grafana", true).await.is_err());
    }

    #[tokio::test]
    async fn a_password_secret_is_found_in_either_watch_and_absent_from_both_without_a_read() {
        let (cache, mut writers) = Cache::new();
        let client = no_server();
        sync(&mut writers, &["shop-redis"], &["users-password"]);
        // The operator's own Secret (another store's generated password, say) comes with its data.
        assert!(cache.user_secret(&client, "sales", "shop-redis").await.unwrap().is_some(), "no request");
        // In neither watch: it does not exist.
        assert!(cache.user_secret(&client, "sales", "missing").await.unwrap().is_none(), "no request");
        // The user's own Secret: its data is read from the API server (the watch keeps no content).
        assert!(cache.user_secret(&client, "sales", "users-password").await.is_err());
    }

    #[test]
    fn the_memo_keeps_only_writes_the_watch_has_not_shown() {
        let (cache, mut writers) = Cache::new();
        let shown: Vec<String> = (0..100).map(|i| format!("s{i}")).collect();
        sync(&mut writers, &shown.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
        cache.writing_secret("sales", "not-yet-seen");
        for name in &shown {
            cache.writing_secret("sales", name);
        }
        let written = cache.written_secrets.lock().unwrap();
        assert!(written.len() <= 65, "{} entries", written.len());
        assert!(written.iter().any(|k| k.name == "not-yet-seen"), "an unseen write stays");
    }
}
