//! What goes into a store's scripts ConfigMap: the engine's settings and the scripts it loads, so a user
//! can read exactly what runs inside their Redis (`kubectl get configmap <store>-scripts -o yaml`).

use std::collections::BTreeMap;

use crate::crd::{Engine, ProcessingSpec};

/// File name → content.
pub fn files(engine: Engine, processing: &ProcessingSpec) -> BTreeMap<String, String> {
    let settings = format!(
        "engine: {engine}\nbatchSize: {}\nmetricsIntervalSeconds: {}\n",
        processing.batch_size, processing.metrics_interval_seconds
    );
    BTreeMap::from([("settings.yaml".to_string(), settings)])
}
