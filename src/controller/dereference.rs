//! Dereference: everything the build needs besides the spec. The Redis admin password (the user's
//! Secret, or the operator's generated one), Grafana's admin password, the Redis users' passwords.

use kube::runtime::events::EventType;
use rand::Rng;
use rand::distr::Alphanumeric;

use super::{Context, publish_event, users};
use crate::apply::Result;
use crate::crd::{GrafanaMode, PopUpStore};
use crate::render::acl::Credentials;
use crate::render::{self, PASSWORD_KEY, PasswordSource, ValidatedStore};
use crate::status::{Check, reason};

/// What the reconcile read (or generated) for one store.
pub(super) struct Inputs {
    pub redis_password: RedisPassword,
    /// Empty unless Grafana is managed: only a managed Grafana has an admin password.
    pub grafana_admin_password: String,
    pub credentials: Credentials,
}

pub(super) struct RedisPassword {
    pub value: Option<String>,
    /// The operator-owned Secret had no password, so a new one was generated.
    pub regenerated: bool,
    /// Set when the password cannot be had: it becomes the RedisReady condition.
    pub problem: Option<Check>,
}

pub(super) async fn dereference(ctx: &Context, store: &PopUpStore, validated: &ValidatedStore) -> Result<Inputs> {
    // A store that never had a status is new: its Secrets can only be this process's own writes.
    let new_store = store.status.is_none();
    let redis_password = read_redis_password(ctx, validated, new_store).await?;
    if redis_password.regenerated && store.status.is_some() {
        // The store ran before, so its password Secret was deleted by someone: say what that costs.
        let note = format!(
            "the Redis password Secret {} was missing and a new password was generated; Redis takes it without a restart (the sale in its emptyDir is kept) and the old one stays valid for {} s",
            validated.password.secret_name(),
            ctx.config.rotation_grace.as_secs()
        );
        publish_event(ctx, store, EventType::Warning, "RedisPasswordRegenerated", note).await;
    }
    let grafana_admin_password = if validated.spec.grafana.effective_mode() == GrafanaMode::Managed {
        let (ns, name) = (&validated.namespace, validated.names.grafana());
        existing_or_new_password(ctx, ns, &name, render::grafana::ADMIN_PASSWORD_KEY, new_store).await?.0
    } else {
        String::new()
    };
    let credentials = users::read(ctx, validated, redis_password.value.as_deref(), new_store).await?;
    Ok(Inputs { redis_password, grafana_admin_password, credentials })
}

/// What `render` uses instead of a cluster: new passwords everywhere. A user's password Secret is not
/// read, so its user (`default`) stays off in the rendered ACL file until the operator, which reads the
/// Secret, applies it.
pub(super) fn offline(validated: &ValidatedStore) -> Inputs {
    let admin = match validated.password {
        PasswordSource::Generated { .. } => Some(new_password()),
        PasswordSource::UserSecret(_) => None,
    };
    let managed_grafana = validated.spec.grafana.effective_mode() == GrafanaMode::Managed;
    Inputs {
        credentials: users::generated(validated, admin.as_deref()),
        redis_password: RedisPassword { value: admin, regenerated: false, problem: None },
        grafana_admin_password: if managed_grafana { new_password() } else { String::new() },
    }
}

async fn read_redis_password(ctx: &Context, store: &ValidatedStore, new_store: bool) -> Result<RedisPassword> {
    let r = match &store.password {
        PasswordSource::Generated { secret } => {
            let (value, regenerated) =
                existing_or_new_password(ctx, &store.namespace, secret, PASSWORD_KEY, new_store).await?;
            return Ok(RedisPassword { value: Some(value), regenerated, problem: None });
        }
        PasswordSource::UserSecret(r) => r,
    };
    let secret = ctx.cache.user_secret(&ctx.client, &store.namespace, &r.name).await?;
    let problem = |reason: &str, message: String| RedisPassword {
        value: None,
        regenerated: false,
        problem: Some(Check::not(reason, message)),
    };
    let Some(secret) = secret else {
        return Ok(problem(
            reason::PASSWORD_SECRET_MISSING,
            format!(
                "Secret {} (spec.redis.passwordSecretRef) does not exist in namespace {}: create it or remove passwordSecretRef",
                r.name, store.namespace
            ),
        ));
    };
    let value = secret.data.as_ref().and_then(|d| d.get(&r.key)).map(|b| String::from_utf8_lossy(&b.0).into_owned());
    match value {
        // Any bytes: the password reaches Redis only as a hash (ACL file, ACL SETUSER).
        Some(v) if !v.is_empty() => Ok(RedisPassword { problem: None, value: Some(v), regenerated: false }),
        _ => Ok(problem(
            reason::PASSWORD_KEY_MISSING,
            format!("Secret {} has no non-empty key {:?} (spec.redis.passwordSecretRef.key)", r.name, r.key),
        )),
    }
}

/// The password stored under `key` in an operator-owned Secret, or a new random one when there is none
/// (then `true`). A Secret the watch has not seen is read first, except for a `new_store`'s when the
/// cache can tell (`Cache::owned_secret`): a password is never replaced on the word of a cache that
/// may lag behind our own write.
pub(super) async fn existing_or_new_password(
    ctx: &Context,
    namespace: &str,
    secret: &str,
    key: &str,
    new_store: bool,
) -> Result<(String, bool)> {
    let existing = ctx.cache.owned_secret(&ctx.client, namespace, secret, new_store).await?;
    let value = existing
        .and_then(|s| s.data)
        .and_then(|d| d.get(key).cloned())
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .filter(|v| !v.is_empty());
    Ok(match value {
        Some(v) => (v, false),
        None => (new_password(), true),
    })
}

pub fn new_password() -> String {
    rand::rng().sample_iter(&Alphanumeric).take(32).map(char::from).collect()
}
