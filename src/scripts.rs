//! What goes into a store's scripts ConfigMap: the engine's settings and the exact scripts it loads,
//! so a user can read what runs inside their Redis (`kubectl get configmap <store>-scripts -o yaml`).

use std::collections::BTreeMap;

use crate::crd::{Engine, ProcessingSpec};
use crate::engine::{ProcessingSettings, gears, native, triggers};

/// File name → content.
pub fn files(engine: Engine, processing: &ProcessingSpec) -> BTreeMap<String, String> {
    let settings = ProcessingSettings::from(processing);
    let mut files = BTreeMap::from([(
        "settings.yaml".to_string(),
        format!(
            "engine: {engine}\nbatchSize: {}\nmetricsIntervalSeconds: {}\n",
            processing.batch_size, processing.metrics_interval_seconds
        ),
    )]);
    match engine {
        Engine::Gears => {
            for script in gears::scripts(&settings) {
                files.insert(format!("{}.py", script.id), script.code);
            }
        }
        Engine::Triggers => {
            files.insert(format!("{}.js", triggers::LIBRARY), triggers::library_code(&settings));
        }
        Engine::Native => {
            files.insert("native_apply.lua".into(), native::APPLY_LUA.into());
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_engine_shows_the_scripts_it_loads_with_its_settings() {
        let p = ProcessingSpec { batch_size: 7, ..Default::default() };
        let gears = files(Engine::Gears, &p);
        assert!(gears["popup-complete.py"].contains("batch=7"), "{}", gears["popup-complete.py"]);
        assert!(gears.contains_key("popup-timeseries.py"));
        let js = files(Engine::Triggers, &p);
        assert!(js["popup.js"].starts_with("#!js"), "{}", js["popup.js"]);
        assert!(files(Engine::Native, &p).contains_key("native_apply.lua"));
        assert!(gears["settings.yaml"].contains("batchSize: 7"));
    }
}
