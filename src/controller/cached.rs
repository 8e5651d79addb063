//! The form in which the controller's cache keeps an object: [`Cached<K>`], what a reconcile reads of a
//! `K` and nothing else, made from the API server's answer as it is decoded.
//!
//! Why not the typed object with its fields emptied: a k8s-openapi object is as large as all its
//! optional fields together (a StatefulSet or a Pod, with its pod spec inline, takes over 2 KB empty),
//! and a one-entry `BTreeMap` (the applied hash among the annotations, a Secret's data) takes a whole
//! node of eleven entries. At a thousand stores of fifteen children each, those are most of the
//! operator's memory (docs/benchmarks.md). A reconcile gets the typed object back ([`Cached::full`]),
//! made anew for that read.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::ByteString;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStatus, StatefulSet, StatefulSetSpec, StatefulSetStatus,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec, JobStatus};
use k8s_openapi::api::core::v1::{Pod, PodStatus, PodTemplateSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::PartialObjectMeta;
use serde::de::{Deserialize, DeserializeOwned, Deserializer};

use crate::render::STORE_LABEL;

/// Pairs instead of a map: the few entries a cached object keeps.
pub type Entries<V> = Vec<(String, V)>;

/// A kind the cache keeps as [`Cached`]: what of it a reconcile reads besides the metadata.
pub trait Slim: Resource<DynamicType = (), Scope = NamespaceResourceScope> + DeserializeOwned + Sized {
    /// What a reconcile reads of this kind besides name, namespace, owner, generation and annotations.
    type State: Clone + Debug + Send + Sync + 'static;
    /// Whether a reconcile reads the uid (a Grafana rollout is told apart by its Deployment's uid).
    const KEEPS_UID: bool = false;
    /// The object split into its metadata and the state the cache keeps (a label worth keeping, such as
    /// a pod's store, goes into the state: [`Cached::of`] drops the labels).
    fn slim(self) -> (ObjectMeta, Self::State);
    /// The typed object again, as much of it as the cache keeps.
    fn full(metadata: ObjectMeta, state: &Self::State) -> Self;
}

/// An object as the cache keeps it: its name, namespace, owners and generation, the operator's own
/// annotations (`popup.dev/…`: the applied hash, checksums, rotation times) and `K`'s [`Slim::State`].
#[derive(Debug)]
pub struct Cached<K: Slim> {
    metadata: ObjectMeta,
    annotations: Entries<String>,
    pub state: K::State,
}

impl<K: Slim> Clone for Cached<K> {
    fn clone(&self) -> Self {
        Cached { metadata: self.metadata.clone(), annotations: self.annotations.clone(), state: self.state.clone() }
    }
}

impl<K: Slim> Cached<K> {
    /// The slim form of `obj`: its labels and others' annotations are selectors' and people's business,
    /// and who wrote which field is the API server's.
    pub fn of(obj: K) -> Self {
        let (mut metadata, state) = obj.slim();
        let annotations = metadata
            .annotations
            .take()
            .into_iter()
            .flatten()
            .filter(|(key, _)| key.starts_with("popup.dev/"))
            .collect();
        metadata.labels = None;
        metadata.managed_fields = None;
        Cached { metadata, annotations, state }
    }

    /// The typed object, made anew with what the cache keeps.
    pub fn full(&self) -> K {
        let mut metadata = self.metadata.clone();
        if !self.annotations.is_empty() {
            metadata.annotations = Some(self.annotations.iter().cloned().collect());
        }
        K::full(metadata, &self.state)
    }

    /// Drops what only the watch needed: the resourceVersion it resumes from (read before this runs)
    /// and, unless `K` reads it, the uid.
    pub fn settle(&mut self) {
        self.metadata.resource_version = None;
        if !K::KEEPS_UID {
            self.metadata.uid = None;
        }
    }
}

impl<K: Slim> Resource for Cached<K> {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn metadata_api() -> bool {
        K::metadata_api()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Decoded as `K`, then made slim at once: the full object lives only while its watch event is read.
impl<'de, K: Slim> Deserialize<'de> for Cached<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        K::deserialize(deserializer).map(Cached::of)
    }
}

/// The operator's Secrets: their data (the passwords and the ACL file a reconcile reads back).
impl Slim for Secret {
    type State = Option<Entries<ByteString>>;
    fn slim(self) -> (ObjectMeta, Self::State) {
        (self.metadata, self.data.map(|d| d.into_iter().collect()))
    }
    fn full(metadata: ObjectMeta, data: &Self::State) -> Self {
        Secret { metadata, data: data.as_ref().map(|d| d.iter().cloned().collect()), ..Default::default() }
    }
}

/// What the reconcile reads of a workload: replicas, its pod template's annotations (checksums, which
/// rotations read) and status; not its selector, pod spec or claim templates, which the applied hash
/// stands for.
#[derive(Clone, Debug)]
pub struct Workload<S> {
    pub replicas: Option<i32>,
    pub template_annotations: Option<Entries<String>>,
    pub status: Option<S>,
}

impl<S> Workload<S> {
    fn of(replicas: Option<i32>, template: PodTemplateSpec, status: Option<S>) -> Self {
        let template_annotations = template.metadata.and_then(|m| m.annotations).map(|a| a.into_iter().collect());
        Workload { replicas, template_annotations, status }
    }

    fn template(&self) -> PodTemplateSpec {
        let annotations: Option<BTreeMap<String, String>> =
            self.template_annotations.as_ref().map(|a| a.iter().cloned().collect());
        PodTemplateSpec { metadata: Some(ObjectMeta { annotations, ..Default::default() }), spec: None }
    }
}

/// StatefulSets and Deployments are read alike: replicas, template annotations, status.
macro_rules! replicated_workload {
    ($kind:ident, $spec:ident, $status:ident, keeps_uid: $keeps_uid:expr) => {
        impl Slim for $kind {
            type State = Workload<$status>;
            const KEEPS_UID: bool = $keeps_uid;
            fn slim(self) -> (ObjectMeta, Self::State) {
                let (replicas, template) = self.spec.map(|s| (s.replicas, s.template)).unwrap_or_default();
                (self.metadata, Workload::of(replicas, template, self.status))
            }
            fn full(metadata: ObjectMeta, w: &Self::State) -> Self {
                let spec = $spec { replicas: w.replicas, template: w.template(), ..Default::default() };
                $kind { metadata, spec: Some(spec), status: w.status.clone() }
            }
        }
    };
}

replicated_workload!(StatefulSet, StatefulSetSpec, StatefulSetStatus, keeps_uid: false);
// A Grafana rollout is told apart by its Deployment's uid and generation (`observe`).
replicated_workload!(Deployment, DeploymentSpec, DeploymentStatus, keeps_uid: true);

impl Slim for Job {
    type State = Workload<JobStatus>;
    fn slim(self) -> (ObjectMeta, Self::State) {
        let template = self.spec.map(|s| s.template).unwrap_or_default();
        (self.metadata, Workload::of(None, template, self.status))
    }
    fn full(metadata: ObjectMeta, w: &Self::State) -> Self {
        Job { metadata, spec: Some(JobSpec { template: w.template(), ..Default::default() }), status: w.status.clone() }
    }
}

/// A Redis pod: its status (`status::workload::redis_check` reads no more) and the store it belongs to
/// (which store a change of the pod reconciles).
#[derive(Clone, Debug)]
pub struct RedisPod {
    pub store: Option<String>,
    pub status: Option<PodStatus>,
}

impl Slim for Pod {
    type State = RedisPod;
    fn slim(mut self) -> (ObjectMeta, Self::State) {
        let store = self.metadata.labels.as_mut().and_then(|l| l.remove(STORE_LABEL));
        self.metadata.owner_references = None;
        (self.metadata, RedisPod { store, status: self.status })
    }
    fn full(mut metadata: ObjectMeta, pod: &Self::State) -> Self {
        metadata.labels = pod.store.as_ref().map(|s| BTreeMap::from([(STORE_LABEL.to_string(), s.clone())]));
        Pod { metadata, spec: None, status: pod.status.clone() }
    }
}

/// The children whose content no reconcile reads (ConfigMaps, Services, NetworkPolicies): watched as
/// metadata only. (The other Secrets of the scope are kept as plain `PartialObjectMeta`, with the
/// resourceVersion a user's password Secret is compared by: `cache::name_and_version_only`.)
impl<K: Resource<DynamicType = (), Scope = NamespaceResourceScope>> Slim for PartialObjectMeta<K> {
    type State = ();
    fn slim(self) -> (ObjectMeta, ()) {
        (self.metadata, ())
    }
    fn full(metadata: ObjectMeta, _: &()) -> Self {
        PartialObjectMeta { types: None, metadata, _phantom: std::marker::PhantomData }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cached<K: Slim>(v: serde_json::Value) -> Cached<K> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_workload_keeps_what_a_reconcile_reads_and_gives_it_back_typed() {
        let sts: Cached<StatefulSet> = cached(json!({
            "metadata": {"name": "shop-redis", "namespace": "sales", "uid": "u1", "resourceVersion": "7", "generation": 3,
                "labels": {"app.kubernetes.io/instance": "shop"},
                "annotations": {"popup.dev/applied-hash": "abc", "kubectl.kubernetes.io/last-applied-configuration": "{}"},
                "ownerReferences": [{"apiVersion": "popup.dev/v1alpha1", "kind": "PopUpStore", "name": "shop", "uid": "s1", "controller": true}],
                "managedFields": [{"manager": "popup-operator"}]},
            "spec": {"replicas": 1, "serviceName": "x", "selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}, "annotations": {"popup.dev/config-checksum": "c1"}},
                    "spec": {"containers": [{"name": "redis", "image": "redis"}]}}},
            "status": {"replicas": 1, "readyReplicas": 1}
        }));
        assert_eq!(sts.meta().resource_version.as_deref(), Some("7"), "the watch resumes from it");
        let mut settled = sts.clone();
        settled.settle();
        assert_eq!((settled.meta().resource_version.as_ref(), settled.meta().uid.as_ref()), (None, None));
        let full = settled.full();
        assert_eq!(full.metadata.annotations, Some(BTreeMap::from([("popup.dev/applied-hash".into(), "abc".into())])));
        assert_eq!(full.metadata.labels, None);
        assert_eq!(full.metadata.managed_fields, None);
        assert_eq!(full.metadata.owner_references.as_ref().map(|o| o[0].uid.as_str()), Some("s1"));
        assert_eq!(full.metadata.generation, Some(3));
        let spec = full.spec.unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.template.spec, None);
        let annotations = spec.template.metadata.and_then(|m| m.annotations).unwrap();
        assert_eq!(annotations.get("popup.dev/config-checksum").map(String::as_str), Some("c1"));
        assert_eq!(full.status.and_then(|s| s.ready_replicas), Some(1));
    }

    #[test]
    fn a_deployment_keeps_its_uid_and_a_pod_its_store() {
        let mut d: Cached<Deployment> = cached(json!({"metadata": {"name": "g", "uid": "u1", "resourceVersion": "1"},
            "spec": {"selector": {}, "template": {}}}));
        d.settle();
        assert_eq!(d.full().metadata.uid.as_deref(), Some("u1"));
        let pod: Cached<Pod> =
            cached(json!({"metadata": {"name": "shop-redis-0", "labels": {STORE_LABEL: "shop", "x": "y"}},
            "spec": {"containers": []}, "status": {"phase": "Pending"}}));
        assert_eq!(pod.state.store.as_deref(), Some("shop"));
        let full = pod.full();
        assert_eq!(full.metadata.labels, Some(BTreeMap::from([(STORE_LABEL.to_string(), "shop".to_string())])));
        assert_eq!(full.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    }

    #[test]
    fn a_secret_keeps_its_data() {
        let secret: Cached<Secret> = cached(json!({"metadata": {"name": "shop-redis"}, "type": "Opaque",
            "data": {"password": "c2VjcmV0"}}));
        let data = secret.full().data.unwrap();
        assert_eq!(data.get("password").map(|b| b.0.as_slice()), Some(&b"secret"[..]));
    }
}
