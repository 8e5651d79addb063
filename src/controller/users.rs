//! A store's Redis users (see `render::acl`): their passwords, read from or generated into Secrets, and
//! password rotation without a Redis restart.
//!
//! A rotation, of any user: its password Secret changes (someone writes a new password into it, or
//! deletes the key and the operator generates one) → a watch reconciles the store → the new hash is
//! added next to the old ones, in the ACL file and live with `ACL SETUSER`, so Redis accepts both → the
//! pods that use the user roll onto the new password (a checksum annotation) → once nothing uses the
//! old password any more, its hash goes, again in the file and live. Who still uses an old password:
//!
//! - processor, managed Grafana: their Deployment has not finished rolling out;
//! - simulator: a Job cannot roll, so the Job that started with the old password, until it finishes;
//! - admin (`default`) and sidecar-mode Grafana: people, tools and a Grafana the operator cannot see:
//!   [`ROTATION_GRACE`] after the switch;
//! - the operator's own user: nobody once Redis took the new password.
//!
//! The ACL Secret `<store>-redis-acl` is the record: its file lists every hash still accepted, its
//! annotation since when older ones are on their way out.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;

use super::{Context, RedisTarget, cache, existing_or_new_password, new_password, publish_event};
use crate::apply;
use crate::apply::Result;
use crate::crd::{GrafanaMode, PopUpStore};
use crate::render::acl::{
    self, ACL_FILE_KEY, Credentials, OPERATOR_PASSWORD_KEY, RETIRING_SINCE_ANNOTATION, Role, password_hash,
};
use crate::render::{CONFIG_CHECKSUM_ANNOTATION, PASSWORD_KEY, ValidatedStore};
use crate::status::Check;

/// How long an old password of a user whose consumers the operator cannot see (the admin, a sidecar-mode
/// Grafana) stays valid after the switch, unless `--rotation-grace-seconds` says otherwise.
pub const ROTATION_GRACE: Duration = Duration::from_secs(120);

/// The store's credentials: current passwords from the Secrets (generated where missing) and, per user,
/// the hashes Redis is to accept: the current one, plus those still on their way out according to the
/// ACL Secret. `admin_password` is `None` while the user's password Secret is missing; `new_store`: the
/// store never had a status (see `Cache::owned_secret`).
pub(super) async fn read(
    ctx: &Context,
    store: &ValidatedStore,
    admin_password: Option<&str>,
    new_store: bool,
) -> Result<Credentials> {
    let (ns, name) = (&store.namespace, store.names.redis_acl());
    let mut acl_secret = ctx.cache.owned_secret(&ctx.client, ns, &name, new_store).await?;
    // A rotation the cache still shows may have been ended by our own last write, which its watch has
    // not delivered yet: reading it again keeps a retired password from being accepted once more.
    if acl_secret.as_ref().is_some_and(|s| s.annotations().contains_key(RETIRING_SINCE_ANNOTATION)) {
        acl_secret = apply::get(&ctx.client, ns, &name).await?;
    }
    let text = |key: &str| {
        acl_secret
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .and_then(|d| d.get(key))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .filter(|v| !v.is_empty())
    };
    let previous = text(ACL_FILE_KEY).map(|t| acl::parse_acl_file(&t)).unwrap_or_default();
    let since: BTreeMap<String, String> = acl_secret
        .as_ref()
        .and_then(|s| s.metadata.annotations.as_ref())
        .and_then(|a| a.get(RETIRING_SINCE_ANNOTATION))
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default();
    let mut passwords = BTreeMap::from([(Role::Operator, text(OPERATOR_PASSWORD_KEY).unwrap_or_else(new_password))]);
    for role in acl::roles(store) {
        if let Some(component) = role.component() {
            let secret = store.names.redis_user(component);
            let password = existing_or_new_password(ctx, &store.namespace, &secret, PASSWORD_KEY, new_store).await?.0;
            passwords.insert(role, password);
        }
    }
    Ok(plan(store, passwords, admin_password, &previous, &since, Timestamp::now()))
}

/// New passwords for every user of the store, as `render` shows them (nothing read from a cluster).
pub fn generated(store: &ValidatedStore, admin_password: Option<&str>) -> Credentials {
    let mut passwords = BTreeMap::from([(Role::Operator, new_password())]);
    passwords.extend(acl::roles(store).into_iter().filter(|r| r.component().is_some()).map(|r| (r, new_password())));
    plan(store, passwords, admin_password, &BTreeMap::new(), &BTreeMap::new(), Timestamp::now())
}

/// Which hashes each user accepts: the current password's first, then the previously accepted ones
/// (a rotation in progress). A new current password starts the clock of its rotation.
pub fn plan(
    store: &ValidatedStore,
    passwords: BTreeMap<Role, String>,
    admin_password: Option<&str>,
    previous: &BTreeMap<String, Vec<String>>,
    since: &BTreeMap<String, String>,
    now: Timestamp,
) -> Credentials {
    let mut creds = Credentials { passwords, ..Default::default() };
    for role in acl::roles(store) {
        let current = match role {
            Role::Admin => admin_password.map(password_hash),
            _ => creds.passwords.get(&role).map(|p| password_hash(p)),
        };
        // Without a current password (the admin's Secret is missing) the user is off until it comes back.
        let Some(current) = current else { continue };
        let before = previous.get(role.user()).cloned().unwrap_or_default();
        let mut accepted = vec![current.clone()];
        accepted.extend(before.iter().filter(|h| **h != current).cloned());
        if accepted.len() > 1 {
            let started = match since.get(role.user()) {
                Some(t) if before.first() == Some(&current) => t.clone(),
                _ => now.to_string(),
            };
            creds.retiring_since.insert(role, started);
        }
        creds.accepted.insert(role, accepted);
    }
    creds
}

/// Makes Redis' users what `creds` says. A failure becomes the RedisReady condition: without its users
/// the store cannot work.
pub(super) async fn ensure(
    ctx: &Context,
    store: &PopUpStore,
    validated: &ValidatedStore,
    target: &RedisTarget,
    creds: &Credentials,
) -> std::result::Result<(), Check> {
    match ctx.redis.ensure_users(target, &acl::users(validated, creds)).await {
        Ok(changed) => {
            for user in changed {
                let Some(role) = Role::from_user(&user) else { continue };
                if creds.retiring(role) {
                    let note = format!(
                        "Redis accepts the new password of user {user} (no restart); the previous one stays valid until {}",
                        consumers(role, validated, ctx.config.rotation_grace)
                    );
                    tracing::info!(store = %validated.names.store, %user, "Redis password rotation started");
                    publish_event(ctx, store, EventType::Normal, "RedisPasswordRotated", note).await;
                }
            }
            Ok(())
        }
        Err(p) => Err(Check::not(p.reason, format!("setting up the Redis users failed: {}", p.message))),
    }
}

fn consumers(role: Role, store: &ValidatedStore, grace: Duration) -> String {
    match role {
        Role::Processor => format!("the processor Deployment {} has rolled out", store.names.processor()),
        Role::Grafana if store.spec.grafana.effective_mode() == GrafanaMode::Managed => {
            format!("the Grafana Deployment {} has rolled out", store.names.grafana())
        }
        Role::Simulator => "the simulator Job that started with it has finished".into(),
        Role::Operator => "the operator has switched".into(),
        _ => format!("{} s have passed (its users cannot be seen)", grace.as_secs()),
    }
}

/// What shows whether the old passwords are still in use.
pub(super) struct Consumers<'a> {
    /// The Deployments as applied in this reconcile (with their status).
    pub deployments: &'a [Deployment],
    /// The current simulator Job's name, if any.
    pub simulator_job: Option<&'a str>,
}

/// Ends the rotations whose old passwords nobody uses any more: their hashes leave the ACL file and Redis.
/// Returns true while a rotation is still waiting (the caller looks again soon).
pub(super) async fn finish_rotations(
    ctx: &Context,
    store: &PopUpStore,
    validated: &ValidatedStore,
    target: &RedisTarget,
    creds: &Credentials,
    consumers: Consumers<'_>,
) -> Result<bool> {
    let waiting: Vec<Role> = acl::ROLES.into_iter().filter(|r| creds.retiring(*r)).collect();
    if waiting.is_empty() {
        return Ok(false);
    }
    let job = match consumers.simulator_job.filter(|_| waiting.contains(&Role::Simulator)) {
        Some(name) => cache::get_or_read(&ctx.cache.jobs, &ctx.client, &validated.namespace, name).await?,
        None => None,
    };
    let deployment = |name: String| consumers.deployments.iter().find(|d| d.metadata.name.as_deref() == Some(&name));
    let now = Timestamp::now();
    let done: Vec<Role> = waiting
        .iter()
        .copied()
        .filter(|role| match role {
            Role::Operator => true,
            Role::Processor => deployment(validated.names.processor()).is_none_or(rolled_out),
            Role::Grafana if validated.spec.grafana.effective_mode() == GrafanaMode::Managed => {
                deployment(validated.names.grafana()).is_none_or(rolled_out)
            }
            Role::Simulator => job.as_ref().is_none_or(|j| job_done_with_old_password(j, &creds.revision(*role))),
            _ => grace_over(creds.retiring_since.get(role), now, ctx.config.rotation_grace),
        })
        .collect();
    if done.is_empty() {
        return Ok(true);
    }
    let mut next = creds.clone();
    for role in &done {
        if let Some(hashes) = next.accepted.get_mut(role) {
            hashes.truncate(1);
        }
        next.retiring_since.remove(role);
    }
    let secret = acl::acl_secret(validated, &next);
    ctx.cache.writing_secret(&validated.namespace, &secret.name_any());
    apply::apply_unread(&ctx.client, cache::seen(&ctx.cache.secrets, &secret), secret).await?;
    match ctx.redis.ensure_users(target, &acl::users(validated, &next)).await {
        Ok(_) => {
            for role in &done {
                let note = format!("the previous password of Redis user {} is no longer accepted", role.user());
                tracing::info!(store = %validated.names.store, user = role.user(), "Redis password rotation finished");
                publish_event(ctx, store, EventType::Normal, "RedisPasswordRetired", note).await;
            }
        }
        // The file is current; the live users follow on the next reconcile (ensure runs every time).
        Err(p) => {
            tracing::warn!(store = %validated.names.store, reason = p.reason, "retiring old Redis passwords: {}", p.message)
        }
    }
    Ok(done.len() < waiting.len())
}

/// Every pod of the Deployment runs its current template, and no pod of an older one is left.
fn rolled_out(d: &Deployment) -> bool {
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(st) = d.status.as_ref() else { return false };
    st.observed_generation.is_some_and(|g| Some(g) >= d.metadata.generation)
        && st.updated_replicas.unwrap_or(0) == wanted
        && st.replicas.unwrap_or(0) == wanted
        && st.available_replicas.unwrap_or(0) == wanted
}

/// The Job finished, or started with the current password: nothing of it uses an older one.
fn job_done_with_old_password(job: &Job, current_revision: &str) -> bool {
    let st = job.status.clone().unwrap_or_default();
    let finished = st.succeeded.unwrap_or(0) > 0 || st.failed.unwrap_or(0) > 0 || st.completion_time.is_some();
    let revision = job
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(CONFIG_CHECKSUM_ANNOTATION));
    finished || revision.map(String::as_str) == Some(current_revision)
}

fn grace_over(since: Option<&String>, now: Timestamp, grace: Duration) -> bool {
    let Some(since) = since.and_then(|s| s.parse::<Timestamp>().ok()) else { return true };
    now.duration_since(since).unsigned_abs() >= grace
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Engine;
    use crate::render::tests::store_with;
    use crate::render::validate;
    use serde_json::json;

    fn passwords(p: &str) -> BTreeMap<Role, String> {
        [Role::Operator, Role::Grafana, Role::Simulator, Role::Processor]
            .into_iter()
            .map(|r| (r, p.to_string()))
            .collect()
    }

    #[test]
    fn a_new_password_is_accepted_next_to_the_old_one_and_starts_its_clock_once() {
        let v = validate(&store_with(Engine::Native, |_| {})).unwrap();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let first = plan(&v, passwords("one"), Some("admin"), &BTreeMap::new(), &BTreeMap::new(), t0);
        assert_eq!(first.accepted[&Role::Processor], [password_hash("one")]);
        assert!(first.retiring_since.is_empty(), "nothing to retire on creation");

        let file = acl::parse_acl_file(&acl::acl_file(&v, &first));
        let mut rotated = passwords("one");
        rotated.insert(Role::Processor, "two".into());
        let t1: Timestamp = "2026-01-01T00:05:00Z".parse().unwrap();
        let second = plan(&v, rotated.clone(), Some("admin"), &file, &BTreeMap::new(), t1);
        assert_eq!(second.accepted[&Role::Processor], [password_hash("two"), password_hash("one")]);
        assert_eq!(second.retiring_since[&Role::Processor], "2026-01-01T00:05:00Z");
        assert_eq!(second.accepted[&Role::Grafana], [password_hash("one")], "only the changed user");

        // The next reconcile keeps the clock.
        let file = acl::parse_acl_file(&acl::acl_file(&v, &second));
        let since = BTreeMap::from([("popup-processor".to_string(), "2026-01-01T00:05:00Z".to_string())]);
        let third = plan(&v, rotated, Some("admin"), &file, &since, "2026-01-01T00:09:00Z".parse().unwrap());
        assert_eq!(third, second);
    }

    #[test]
    fn a_missing_admin_password_turns_the_admin_off_until_it_is_back() {
        let v = validate(&store_with(Engine::Gears, |_| {})).unwrap();
        let now = Timestamp::now();
        let creds = plan(&v, passwords("p"), None, &BTreeMap::new(), &BTreeMap::new(), now);
        assert!(!creds.accepted.contains_key(&Role::Admin));
        assert!(acl::acl_file(&v, &creds).starts_with("user default off "));
        assert!(!creds.accepted.contains_key(&Role::Processor), "gears has no processor");
    }

    #[test]
    fn old_passwords_go_when_their_consumers_have_rolled() {
        let d = |generation: i64, status: serde_json::Value| -> Deployment {
            serde_json::from_value(json!({"metadata": {"generation": generation}, "spec": {"replicas": 2, "selector": {}, "template": {}}, "status": status})).unwrap()
        };
        let done = json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2});
        assert!(rolled_out(&d(3, done.clone())));
        assert!(!rolled_out(&d(4, done)), "the controller has not seen the new template yet");
        let rolling = json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2});
        assert!(!rolled_out(&d(3, rolling)), "an old pod is still there");

        let job = |revision: &str, status: serde_json::Value| -> Job {
            serde_json::from_value(json!({"spec": {"template": {"metadata": {"annotations": {CONFIG_CHECKSUM_ANNOTATION: revision}}}}, "status": status})).unwrap()
        };
        assert!(!job_done_with_old_password(&job("old", json!({"active": 1})), "new"));
        assert!(job_done_with_old_password(&job("old", json!({"succeeded": 1})), "new"));
        assert!(job_done_with_old_password(&job("old", json!({"failed": 1})), "new"));
        assert!(job_done_with_old_password(&job("new", json!({"active": 1})), "new"));

        let now: Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        assert!(!grace_over(Some(&"2026-01-01T00:09:00Z".to_string()), now, ROTATION_GRACE));
        assert!(grace_over(Some(&"2026-01-01T00:08:00Z".to_string()), now, ROTATION_GRACE));
    }
}
