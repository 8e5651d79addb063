//! The engines as the rest of the crate sees them: which one, its settings, and loading its scripts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    ENGINE_ERROR_TTL, EngineError, RedisConn, Result, functions, gears, module_list, require_modules, server_addr,
    triggers,
};

/// Which processing engine runs the sale: the one type for it, also a store's `spec.engine` (`crd::Engine`
/// is this type, hence the schema).
///
/// No default: the engine must be the one of the Redis in question (a store's `spec.engine`, whose
/// one default is `crd`'s), so the command lines ask for it (`load --engine` is required); the command
/// line parses it (`cli`). What each one is, in a line: [`EngineKind::description`].
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Gears,
    Triggers,
    Native,
}

impl EngineKind {
    /// What the engine is, in a line (`--engine`'s help).
    pub fn description(self) -> &'static str {
        match self {
            EngineKind::Gears => "RedisGears 1 Python scripts (RG.PYEXECUTE), as in the original demo",
            EngineKind::Triggers => "RedisGears 2 JavaScript stream triggers (TFUNCTION LOAD), redis-stack 7.x",
            EngineKind::Native => "The operator's own worker (`popup-operator process`), any Redis with TimeSeries",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Gears => "gears",
            EngineKind::Triggers => "triggers",
            EngineKind::Native => "native",
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Settings every engine honours: orders per batch, TimeSeries sampling interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessingSettings {
    pub batch_size: u32,
    pub metrics_interval: Duration,
}

impl Default for ProcessingSettings {
    fn default() -> Self {
        ProcessingSettings {
            batch_size: crate::limits::DEFAULT_BATCH_SIZE,
            metrics_interval: Duration::from_secs(crate::limits::DEFAULT_METRICS_INTERVAL_SECONDS.into()),
        }
    }
}

impl ProcessingSettings {
    /// Interval in whole milliseconds, at least 1.
    pub fn interval_ms(&self) -> u64 {
        (self.metrics_interval.as_millis() as u64).max(1)
    }
    /// Batch size, at least 1.
    pub fn batch(&self) -> u32 {
        self.batch_size.max(1)
    }

    /// An engine's script template with its placeholders filled: `__BATCH__`, `__INTERVAL_MS__` and
    /// `__ERROR_TTL_MS__` from these settings, then the engine's own `(placeholder, value)` pairs.
    pub(crate) fn fill(&self, template: &str, extra: &[(&str, String)]) -> String {
        let common = [
            ("__BATCH__", self.batch().to_string()),
            ("__INTERVAL_MS__", self.interval_ms().to_string()),
            ("__ERROR_TTL_MS__", ENGINE_ERROR_TTL.as_millis().to_string()),
        ];
        common
            .iter()
            .chain(extra)
            .fold(template.to_string(), |text, (placeholder, value)| text.replace(placeholder, value))
    }
}

/// What [`load_scripts`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum LoadOutcome {
    /// Everything was already there with the requested settings; nothing was sent.
    AlreadyLoaded,
    /// Nothing was there; the scripts were loaded.
    Loaded,
    /// Something was there but missing parts or with other settings/code; it was replaced.
    Reloaded { reason: String },
}

impl LoadOutcome {
    /// Both parts of a load: reloaded when either was, loaded when either was, else already there.
    pub fn and(self, other: LoadOutcome) -> LoadOutcome {
        use LoadOutcome::*;
        match (self, other) {
            (Reloaded { reason }, _) | (_, Reloaded { reason }) => Reloaded { reason },
            (Loaded, _) | (_, Loaded) => Loaded,
            (AlreadyLoaded, AlreadyLoaded) => AlreadyLoaded,
        }
    }
}

/// Make sure the engine's scripts are in Redis with these settings (idempotent).
///
/// - gears: RG.DUMPREGISTRATIONS is compared with the expected registrations; RG.PYEXECUTE
///   `ID popup-complete|popup-timeseries UPGRADE` is sent only for missing/different ones.
/// - triggers: TFUNCTION LIST WITHCODE is compared with the library text; TFUNCTION LOAD REPLACE
///   only when missing/different.
/// - native: the worker is a separate process; its scripts are loaded as below.
///
/// Then the scripts the engine's components call ([`functions::scripts_for`]) as Redis Functions
/// (`FUNCTION LOAD REPLACE` when missing or different), or into the script cache on Redis 6.2: the
/// components may only call them (see [`functions`]).
pub async fn load_scripts(
    conn: &mut impl RedisConn,
    kind: EngineKind,
    settings: &ProcessingSettings,
) -> Result<LoadOutcome> {
    let addr = server_addr(conn).await;
    let mods = module_list(conn).await?;
    require_modules(&addr, &mods, kind)?;
    let engine = match kind {
        EngineKind::Gears => gears::load(conn, &addr, settings).await?,
        EngineKind::Triggers => triggers::load(conn, &addr, settings).await?,
        EngineKind::Native => LoadOutcome::AlreadyLoaded,
    };
    let scripts = functions::ensure(conn, functions::scripts_for(kind)).await.map_err(|e| match e {
        EngineError::Command { command, source } => {
            EngineError::ScriptLoad { engine: kind, addr: addr.clone(), detail: format!("{command}: {source}") }
        }
        other => other,
    })?;
    Ok(engine.and(scripts))
}

/// A small stable hash (FNV-1a 64) of script text, used to tag what is loaded.
pub fn script_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_script_has_its_placeholders_filled() {
        let settings = ProcessingSettings { batch_size: 0, metrics_interval: Duration::from_millis(2500) };
        assert_eq!(settings.fill("b=__BATCH__ i=__INTERVAL_MS__ x=__X__", &[("__X__", "y".into())]), "b=1 i=2500 x=y");
        let mut codes: Vec<String> = gears::scripts(&settings).into_iter().map(|s| s.code).collect();
        codes.push(triggers::library_code(&settings));
        for code in codes {
            let left =
                code.match_indices("__").any(|(i, _)| code[i + 2..].starts_with(|c: char| c.is_ascii_uppercase()));
            assert!(!left, "a placeholder is left in:\n{code}");
        }
    }

    #[test]
    fn script_hash_is_stable() {
        assert_eq!(script_hash(""), "cbf29ce484222325");
        assert_ne!(script_hash("a"), script_hash("b"));
    }
}
