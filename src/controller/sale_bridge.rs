//! Where the operator meets the sale: a store's processing settings and sale numbers converted between
//! the resource's types (`crd`) and the sale's (`sale`), and the scripts ConfigMap's files of a store
//! (what its engine loads, shown to users), which the builders take as data. `crd` and `render` never
//! import the sale but for its engine type (`crd::Engine`); this module does it for them.

use std::collections::BTreeMap;

use crate::crd::{ProcessingSpec, SaleStatus};
use crate::render::ValidatedStore;
use crate::sale::{self, ProcessingSettings, SaleSnapshot};

/// A store's processing settings as every engine takes them.
impl From<&ProcessingSpec> for ProcessingSettings {
    fn from(p: &ProcessingSpec) -> Self {
        ProcessingSettings {
            batch_size: p.batch_size,
            metrics_interval: std::time::Duration::from_secs(p.metrics_interval_seconds.into()),
        }
    }
}

/// The sale's numbers read from Redis, as the store's status shows them.
impl From<SaleSnapshot> for SaleStatus {
    fn from(sale: SaleSnapshot) -> Self {
        SaleStatus {
            available: sale.product,
            customers_waiting: sale.customers_waiting,
            orders_queued: sale.orders_queued,
            completed: sale.completed,
            rejected: sale.rejected,
        }
    }
}

/// The files of a store's scripts ConfigMap (file name → text): its engine's settings and scripts, as
/// the operator loads them into its Redis. The controller's build stage and `render` pass them to the
/// builders (`render::BuildInputs::scripts`).
pub fn script_files(store: &ValidatedStore) -> BTreeMap<String, String> {
    sale::scripts::files(store.engine(), &ProcessingSettings::from(&store.spec.processing))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Engine, PopUpStore, PopUpStoreSpec};

    #[test]
    fn processing_and_sale_cross_the_engine_boundary_field_for_field() {
        let p = ProcessingSpec { batch_size: 7, metrics_interval_seconds: 2, ..Default::default() };
        let settings = ProcessingSettings::from(&p);
        assert_eq!(settings, ProcessingSettings { batch_size: 7, metrics_interval: std::time::Duration::from_secs(2) });
        let sale =
            SaleSnapshot { product: Some(-1), customers_waiting: 2, orders_queued: 3, completed: 4, rejected: 5 };
        assert_eq!(
            SaleStatus::from(sale),
            SaleStatus { available: Some(-1), customers_waiting: 2, orders_queued: 3, completed: 4, rejected: 5 }
        );
    }

    #[test]
    fn a_stores_script_files_are_its_engines_with_its_settings() {
        for engine in [Engine::Gears, Engine::Triggers, Engine::Native] {
            let mut spec: PopUpStoreSpec = serde_json::from_value(serde_json::json!({ "engine": engine })).unwrap();
            spec.processing.batch_size = 7;
            spec.processing.metrics_interval_seconds = 2;
            let mut store = PopUpStore::new("shop", spec);
            store.metadata.namespace = Some("sales".into());
            let validated = crate::render::validate(&store).unwrap();
            let files = script_files(&validated);
            assert_eq!(
                files["settings.yaml"],
                format!("engine: {engine}\nbatchSize: 7\nmetricsIntervalSeconds: 2\n"),
                "{engine}"
            );
            let settings = ProcessingSettings { batch_size: 7, metrics_interval: std::time::Duration::from_secs(2) };
            assert_eq!(files, sale::scripts::files(engine, &settings));
        }
    }
}
