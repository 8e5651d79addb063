//! Apply: prune what a changed spec no longer wants, then server-side apply the children in dependency
//! order, with the Redis users set up between Redis and the pods that log in as them.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;

use super::cache::{self, seen};
use super::cached::{Cached, Slim};
use super::dereference::Inputs;
use super::{Context, RedisTarget, users};
use crate::apply;
use crate::apply::Result;
use crate::crd::PopUpStore;
use crate::render::{self, ChildKind, Children, ValidatedStore};
use crate::status::Check;
use crate::status::workload::redis_ready;
use kube::runtime::reflector::Store;

/// The live workloads after the apply, and what the Redis users' setup said.
pub(super) struct Applied {
    pub redis: StatefulSet,
    pub deployments: Vec<Deployment>,
    /// `None` when the users were not set up (Redis not ready, or no admin password); `Err`: the
    /// RedisReady condition.
    pub users: Option<std::result::Result<(), Check>>,
    /// The desired simulator Job, created later (once the scripts are in place) by the observe stage.
    pub simulator_job: Option<Job>,
}

pub(super) async fn apply_children(
    ctx: &Context,
    store: &PopUpStore,
    validated: &ValidatedStore,
    inputs: &Inputs,
    target: &RedisTarget,
    children: Children,
) -> Result<Applied> {
    // Only a spec change can make a child unwanted (Grafana mode, password source): prune then, so a
    // settled store does not pay for it. Generation 1 had no earlier spec, so a new store has nothing
    // to prune (and skips the reads of children the cache does not have).
    let spec_changed = store.status.as_ref().and_then(|s| s.observed_generation) != store.metadata.generation;
    if spec_changed && store.metadata.generation != Some(1) {
        prune(ctx, store, validated, &children).await?;
    }
    let (client, cache) = (&ctx.client, &ctx.cache);
    // Every field by name, so that a new kind of child does not compile until it is applied here too.
    let Children { secrets, config_maps, services, network_policies, redis, deployments, simulator_job } = children;
    // Dependency order: what pods read (Secrets, ConfigMaps) before the pods, Services before clients.
    for s in secrets {
        cache.writing_secret(&validated.namespace, &kube::ResourceExt::name_any(&s));
        apply::apply_unread(client, seen(&cache.secrets, &s), s).await?;
    }
    for cm in config_maps {
        apply::apply_unread(client, seen(&cache.config_maps, &cm), cm).await?;
    }
    for svc in services {
        apply::apply_unread(client, seen(&cache.services, &svc), svc).await?;
    }
    // Before the pods: Redis never runs unprotected.
    for policy in network_policies {
        apply::apply_unread(client, seen(&cache.network_policies, &policy), policy).await?;
    }
    let redis = apply::apply(client, seen(&cache.stateful_sets, &redis), redis).await?;
    // The users before the pods that log in as them: a new password is accepted before a pod uses it.
    let users = match inputs.redis_password.problem.is_none() && redis_ready(&redis) {
        true => Some(users::ensure(ctx, store, validated, target, &inputs.credentials).await),
        false => None,
    };
    let mut applied = Vec::new();
    for d in deployments {
        applied.push(apply::apply(client, seen(&cache.deployments, &d), d).await?);
    }
    Ok(Applied { redis, deployments: applied, users, simulator_job })
}

/// Deletes children the current spec no longer wants (e.g. Grafana after `mode: none`).
async fn prune(ctx: &Context, store: &PopUpStore, validated: &ValidatedStore, children: &Children) -> Result<()> {
    let Some(uid) = store.metadata.uid.as_deref() else { return Ok(()) };
    let cache = &ctx.cache;
    for (kind, name) in render::optional_children(&validated.names) {
        if children.has(kind, &name) {
            continue;
        }
        let name = name.as_str();
        match kind {
            ChildKind::Secret => prune_one::<Secret, _>(ctx, validated, uid, &cache.secrets, name).await?,
            ChildKind::ConfigMap => prune_one::<ConfigMap, _>(ctx, validated, uid, &cache.config_maps, name).await?,
            ChildKind::Service => prune_one::<Service, _>(ctx, validated, uid, &cache.services, name).await?,
            ChildKind::NetworkPolicy => {
                prune_one::<NetworkPolicy, _>(ctx, validated, uid, &cache.network_policies, name).await?
            }
            ChildKind::Deployment => prune_one::<Deployment, _>(ctx, validated, uid, &cache.deployments, name).await?,
            // Never optional (see `render::optional_children`).
            ChildKind::StatefulSet | ChildKind::Job => {}
        }
    }
    Ok(())
}

/// Deletes the child `name` of kind `K` if the store owns it; `cached`: the watch's store of that kind.
async fn prune_one<K: apply::Child, M: Slim>(
    ctx: &Context,
    validated: &ValidatedStore,
    uid: &str,
    cached: &Store<Cached<M>>,
    name: &str,
) -> Result<()> {
    let ns = &validated.namespace;
    let seen = cache::seen_named(cached, ns, name);
    if apply::delete_if_owned::<K, M>(&ctx.client, seen, ns, name, uid).await? {
        let kind = K::kind(&());
        tracing::info!(store = %validated.names.store, %kind, %name, "deleted a child the spec no longer wants");
    }
    Ok(())
}
