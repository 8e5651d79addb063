//! An engine's script files for people to read: its settings and the exact scripts it loads, file name →
//! text. The operator puts them into a store's scripts ConfigMap, so a user can read what runs inside
//! their Redis (`kubectl get configmap <store>-scripts -o yaml`).

use std::collections::BTreeMap;

use super::{EngineKind, ProcessingSettings, gears, native, triggers};

/// File name → content: `settings.yaml` and the engine's scripts, filled with `settings`.
pub fn files(kind: EngineKind, settings: &ProcessingSettings) -> BTreeMap<String, String> {
    let mut files = BTreeMap::from([(
        "settings.yaml".to_string(),
        format!(
            "engine: {kind}\nbatchSize: {}\nmetricsIntervalSeconds: {}\n",
            settings.batch_size,
            settings.metrics_interval.as_secs_f64()
        ),
    )]);
    match kind {
        EngineKind::Gears => {
            for script in gears::scripts(settings) {
                files.insert(format!("{}.py", script.id), script.code);
            }
        }
        EngineKind::Triggers => {
            files.insert(format!("{}.js", triggers::LIBRARY), triggers::library_code(settings));
        }
        EngineKind::Native => {
            files.insert("native_apply.lua".into(), native::APPLY_LUA.into());
            files.insert("sample.lua".into(), super::SAMPLE_LUA.into());
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn each_engine_shows_the_scripts_it_loads_with_its_settings() {
        let s = ProcessingSettings { batch_size: 7, ..Default::default() };
        let gears = files(EngineKind::Gears, &s);
        assert!(gears["popup-complete.py"].contains("batch=7"), "{}", gears["popup-complete.py"]);
        assert!(gears.contains_key("popup-timeseries.py"));
        let js = files(EngineKind::Triggers, &s);
        assert!(js["popup.js"].starts_with("#!js"), "{}", js["popup.js"]);
        assert!(files(EngineKind::Native, &s).contains_key("native_apply.lua"));
        assert!(gears["settings.yaml"].contains("batchSize: 7"));
    }

    #[test]
    fn settings_show_the_interval_in_seconds() {
        let whole = ProcessingSettings { batch_size: 3, metrics_interval: Duration::from_secs(5) };
        assert_eq!(
            files(EngineKind::Native, &whole)["settings.yaml"],
            "engine: native\nbatchSize: 3\nmetricsIntervalSeconds: 5\n"
        );
        let part = ProcessingSettings { batch_size: 3, metrics_interval: Duration::from_millis(2500) };
        assert!(files(EngineKind::Triggers, &part)["settings.yaml"].contains("metricsIntervalSeconds: 2.5\n"));
    }
}
