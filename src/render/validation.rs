//! Validation: what the operator refuses in a spec, every problem at once, each naming its field and the
//! fix, and the [`ValidatedStore`] the builders take once nothing is wrong.

use kube::{Resource, ResourceExt};

use super::{Names, PasswordSource, ValidatedStore, default_redis_image, images};
use crate::crd::{GrafanaMode, PopUpStore, PopUpStoreSpec};
use crate::limits::{self, Bounds, MAX_NAME_LEN};

/// A spec value the operator cannot use, with the field's path and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

impl SpecError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self { field: field.to_string(), message: message.into() }
    }
}

/// Every problem of a spec at once, each naming its field and the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct SpecErrors {
    pub errors: Vec<SpecError>,
}

impl SpecErrors {
    /// The fields named, in order.
    pub fn fields(&self) -> Vec<&str> {
        self.errors.iter().map(|e| e.field.as_str()).collect()
    }
}

/// Checks the spec (what a file given to `render` never had checked, or what the CRD schema cannot)
/// and resolves defaults. Reports every problem, not only the first: the native checks below, then the
/// CRD's CEL rules evaluated here too, so the operator refuses what the API server would.
pub fn validate(store: &PopUpStore) -> Result<ValidatedStore, SpecErrors> {
    let mut errors = check_spec(store);
    cel_errors(store, &mut errors);
    if !errors.is_empty() {
        return Err(SpecErrors { errors });
    }
    Ok(resolve(store))
}

/// The store's name, which every child's name starts with.
fn check_name(store: &PopUpStore) -> Option<SpecError> {
    let name = store.metadata.name.as_deref().unwrap_or_default();
    if name.is_empty() {
        return Some(SpecError::new("metadata.name", "is required"));
    }
    (name.len() > MAX_NAME_LEN).then(|| {
        SpecError::new(
            "metadata.name",
            format!(
                "must be at most {MAX_NAME_LEN} characters (child objects add suffixes such as -simulator-<hash>); got {} characters",
                name.len()
            ),
        )
    })
}

/// The checks the CRD schema cannot make, or that a file given to `render` never had.
fn check_spec(store: &PopUpStore) -> Vec<SpecError> {
    let mut errors: Vec<SpecError> = check_name(store).into_iter().collect();
    let mut fail = |field: &str, message: String| errors.push(SpecError::new(field, message));
    let spec = &store.spec;
    for n in bounded_numbers(spec) {
        if let Some(value) = n.value
            && !n.bounds.contains(value)
        {
            let Bounds { min, max } = n.bounds;
            fail(n.field, format!("must be between {min} and {max}, got {value}{}", n.hint));
        }
    }
    if spec.redis.image.as_ref().is_some_and(|i| i.trim().is_empty()) {
        fail("spec.redis.image", "must not be empty; omit it to use the engine's default image".into());
    }
    if spec.grafana.image.as_ref().is_some_and(|i| i.trim().is_empty()) {
        fail("spec.grafana.image", "must not be empty; omit it to use the default image".into());
    }
    if let Some(storage) = &spec.redis.storage
        && !is_positive_quantity(&storage.size)
    {
        fail(
            "spec.redis.storage.size",
            format!("must be a positive Kubernetes quantity such as 1Gi, got {:?}", storage.size),
        );
    }
    if spec.grafana.effective_mode() == GrafanaMode::Sidecar {
        let sc = &spec.grafana.sidecar;
        for (field, key) in [
            ("spec.grafana.sidecar.datasourceLabel", &sc.datasource_label),
            ("spec.grafana.sidecar.dashboardLabel", &sc.dashboard_label),
        ] {
            if !is_label_key(key) {
                fail(field, format!("{key:?} is not a valid label key (e.g. grafana_dashboard)"));
            }
        }
    }
    if let Some(r) = &spec.redis.password_secret_ref {
        if r.name.is_empty() {
            fail("spec.redis.passwordSecretRef.name", "must name a Secret in the store's namespace".into());
        }
        if r.key.is_empty() {
            fail("spec.redis.passwordSecretRef.key", "must name a key of the Secret (default: password)".into());
        }
    }
    errors
}

/// A number of the spec with its bounds (the CRD's `minimum` and `maximum`).
pub(crate) struct BoundedNumber {
    pub field: &'static str,
    pub bounds: Bounds,
    /// `None`: not set (an optional field).
    pub value: Option<i128>,
    /// Appended to the message when the value is out of bounds.
    pub hint: &'static str,
}

/// Every bounded number of a spec, the fields the CRD gives a `minimum` and `maximum` (a test in
/// `cli::tests` checks that the list and the CRD name the same fields with the same bounds).
pub(crate) fn bounded_numbers(spec: &PopUpStoreSpec) -> [BoundedNumber; 9] {
    let number = |field, bounds, value: Option<i128>| BoundedNumber { field, bounds, value, hint: "" };
    let (p, s) = (&spec.processing, &spec.simulator);
    [
        number("spec.stock", limits::STOCK, Some(spec.stock.into())),
        number("spec.saleRun", limits::SALE_RUN, Some(spec.sale_run.into())),
        number("spec.processing.batchSize", limits::BATCH_SIZE, Some(p.batch_size.into())),
        number(
            "spec.processing.metricsIntervalSeconds",
            limits::METRICS_INTERVAL_SECONDS,
            Some(p.metrics_interval_seconds.into()),
        ),
        number("spec.processing.replicas", limits::REPLICAS, Some(p.replicas.into())),
        number("spec.simulator.customers", limits::CUSTOMERS, Some(s.customers.into())),
        number("spec.simulator.maxArrivalMillis", limits::DELAY_MILLIS, Some(s.max_arrival_millis.into())),
        number("spec.simulator.maxOrderDelayMillis", limits::DELAY_MILLIS, Some(s.max_order_delay_millis.into())),
        BoundedNumber {
            hint: "; omit it for random arrivals",
            ..number("spec.simulator.ratePerSecond", limits::RATE_PER_SECOND, s.rate_per_second.map(Into::into))
        },
    ]
}

/// The CRD's CEL rules (quantities, names, images, labels), one source of truth with admission; a field
/// already reported by [`check_spec`] is not reported twice.
fn cel_errors(store: &PopUpStore, errors: &mut Vec<SpecError>) {
    let object = serde_json::to_value(store).expect("a store serializes");
    for e in crate::crd::validate_cel(&object) {
        let field = if e.field_path.is_empty() { "metadata.name" } else { e.field_path.as_str() };
        if !errors.iter().any(|x| x.field == field) {
            let message = e.message.strip_prefix(field).map(|m| m.trim_start_matches([':', ' '])).unwrap_or(&e.message);
            errors.push(SpecError::new(field, message));
        }
    }
}

/// The validated store: names, namespace, owner reference, images and password source resolved.
fn resolve(store: &PopUpStore) -> ValidatedStore {
    let spec = &store.spec;
    let name = store.metadata.name.clone().unwrap_or_default();
    let names = Names::new(&name);
    let password = match &spec.redis.password_secret_ref {
        Some(r) => PasswordSource::UserSecret(r.clone()),
        None => PasswordSource::Generated { secret: names.redis_secret() },
    };
    ValidatedStore {
        names,
        namespace: store.namespace().unwrap_or_else(|| "default".into()),
        owner: store.metadata.uid.as_ref().and_then(|_| store.controller_owner_ref(&())).map(|mut o| {
            // Foreground deletion of the store waits for its children (needs update on popupstores/finalizers).
            o.block_owner_deletion = Some(true);
            o
        }),
        spec: spec.clone(),
        redis_image: spec.redis.image.clone().unwrap_or_else(|| default_redis_image(spec.engine).to_string()),
        grafana_image: spec.grafana.image.clone().unwrap_or_else(|| images::GRAFANA.to_string()),
        password,
    }
}

/// A label key without prefix: 1–63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends; an optional
/// `dns.prefix/` before it.
pub(super) fn is_label_key(key: &str) -> bool {
    let name = key.rsplit_once('/').map(|(_, n)| n).unwrap_or(key);
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && alnum(name.chars().next())
        && alnum(name.chars().last())
}

/// Accepts the quantity forms a volume size takes (`512Mi`, `1Gi`, `1.5G`, `1000000`), positive only.
fn is_positive_quantity(s: &str) -> bool {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let valid_number = !number.is_empty()
        && number.chars().filter(|c| *c == '.').count() <= 1
        && number.parse::<f64>().map(|v| v > 0.0).unwrap_or(false);
    const SUFFIXES: &[&str] = &["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E"];
    valid_number && SUFFIXES.contains(&suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for ok in ["1Gi", "512Mi", "1.5G", "1000000", "10k"] {
            assert!(is_positive_quantity(ok), "{ok}");
        }
        for bad in ["", "0", "Gi", "1GB", "-1Gi", "1..5Gi", "lots"] {
            assert!(!is_positive_quantity(bad), "{bad}");
        }
    }
}
