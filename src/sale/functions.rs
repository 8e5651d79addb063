//! Lua scripts that only the operator loads into Redis and components may only call.
//!
//! A component that may load code (`SCRIPT LOAD`, `EVAL`, `FUNCTION LOAD`) may run any code: a busy
//! loop that blocks Redis for everyone (and `SCRIPT KILL` cannot stop it once it wrote), or any command
//! its user may run, in any order. So the scripts the components need are loaded by the operator (its
//! `load_scripts`, on every reconcile: idempotent, and again after a Redis restart that lost them), and
//! the components' users may only call them:
//!
//! - Redis 7 or later (native and triggers engines): one Redis Functions library, [`LIBRARY`], with one
//!   function per script ([`ServerScript::name`]), loaded with `FUNCTION LOAD REPLACE` when missing or
//!   different; components call them with `FCALL` (their ACL: `+fcall`, nothing else of `FUNCTION`).
//! - Redis 6.2 (the gears engine's redismod) has no Functions: the operator `SCRIPT LOAD`s each body and
//!   components call it with `EVALSHA` (their ACL: `+evalsha`, no `SCRIPT`, no `EVAL`), so they can only
//!   run a script the operator loaded.
//!
//! A caller finds out which on its first call ([`Caller`]: `FCALL`, and `EVALSHA` once Redis answers
//! that it does not know `FCALL`). A script that is not there (Redis restarted and the operator has not
//! reloaded yet) is [`EngineError::ScriptMissing`]: callers wait and retry, they cannot load it.
//!
//! Commands a script runs are checked against the caller's ACL rules, as if the caller sent them:
//! calling only the operator's scripts limits *which code* runs, not which commands the user may send
//! itself.
//!
//! To add a script: a [`ServerScript`] constant (a name and a body written as for `EVAL`: `KEYS`,
//! `ARGV`, `return`), listed in [`scripts_for`] for the engines whose components call it; call it with
//! [`Caller::call`].

use std::sync::atomic::{AtomicU8, Ordering};

use redis::{FromRedisValue, ToRedisArgs, Value};

use super::{EngineError, EngineKind, LoadOutcome, RedisConn, Result, native, value_items, value_pairs, value_str};

/// The Redis Functions library holding every [`ServerScript`] (Redis 7 or later).
pub const LIBRARY: &str = "popup";

/// A Lua script the operator loads and components call by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerScript {
    /// The function's name in [`LIBRARY`] (letters, digits, `_`).
    pub name: &'static str,
    /// The script as `EVAL` would run it: `KEYS`, `ARGV`, `redis.call`, a `return` at the end.
    pub body: &'static str,
}

impl ServerScript {
    /// The SHA-1 `EVALSHA` calls it by (Redis 6.2).
    pub fn sha1(&self) -> String {
        redis::Script::new(self.body).get_hash().to_string()
    }
}

/// The native engine's decision script (`assets/native_apply.lua`), called by the processor.
pub const DECIDE: ServerScript = ServerScript { name: "popup_decide", body: native::APPLY_LUA };
/// The TimeSeries sampler (`assets/sample.lua`), called by the processor (and `process --sample-only`).
pub const SAMPLE: ServerScript = ServerScript { name: "popup_sample", body: super::SAMPLE_LUA };

/// The simulator's send-once batch script (`simulator::SEND_BATCH_LUA`), called by the simulator Job
/// (`simulate --join-sale`) on every engine.
pub const SEND_BATCH: ServerScript = ServerScript { name: "popup_send_batch", body: super::simulator::SEND_BATCH_LUA };

/// The scripts the components of an engine call, which the operator loads for it.
pub fn scripts_for(kind: EngineKind) -> &'static [ServerScript] {
    match kind {
        EngineKind::Native => &[DECIDE, SAMPLE, SEND_BATCH],
        // `process --sample-only` fills the triggers engine's idle gaps with the same sampler.
        EngineKind::Triggers => &[SAMPLE, SEND_BATCH],
        EngineKind::Gears => &[SEND_BATCH],
    }
}

/// The library text `FUNCTION LOAD` gets: each body becomes the callback of a function of its name,
/// called with the keys and arguments as `KEYS` and `ARGV`, so it runs exactly as under `EVAL`.
pub fn library_code(scripts: &[ServerScript]) -> String {
    let mut code = format!("#!lua name={LIBRARY}\n-- Loaded by popup-operator; components may only FCALL these.\n");
    for s in scripts {
        code.push_str(&format!(
            "\nredis.register_function('{}', function(KEYS, ARGV)\n{}\nend)\n",
            s.name,
            s.body.trim_end()
        ));
    }
    code
}

/// True when the reply says Redis has no such command (Redis 6.2 and `FCALL`/`FUNCTION`).
fn is_unknown_command(e: &redis::RedisError) -> bool {
    let text = e.to_string().to_lowercase();
    text.contains("unknown command")
}

/// True when the user may not run `FCALL` itself (not a refusal from inside the function).
fn is_fcall_refused(e: &redis::RedisError) -> bool {
    e.code() == Some("NOPERM") && e.to_string().contains("'fcall'")
}

/// True when the reply says the function or script is not loaded.
fn is_missing(e: &redis::RedisError) -> bool {
    e.code() == Some("NOSCRIPT") || e.to_string().contains("Function not found")
}

/// Make `scripts` the operator's scripts in Redis (idempotent). Redis 7+: the library [`LIBRARY`] is
/// compared with [`library_code`] and loaded with `FUNCTION LOAD REPLACE` only when missing or
/// different (no scripts: a library left from before is deleted). Redis 6.2: `SCRIPT EXISTS`, and
/// `SCRIPT LOAD` of those missing. Needs a user that may run `FUNCTION`/`SCRIPT`: the operator's.
pub async fn ensure(conn: &mut impl RedisConn, scripts: &[ServerScript]) -> Result<LoadOutcome> {
    let listed: redis::RedisResult<Value> =
        redis::cmd("FUNCTION").arg("LIST").arg("LIBRARYNAME").arg(LIBRARY).arg("WITHCODE").query_async(conn).await;
    match listed {
        // The script cache too: the gears engine's users call by EVALSHA (Redis 6.2 has no FCALL), also
        // where its scripts run on a newer Redis (the gears emulation in the tests).
        Ok(reply) => {
            let library = ensure_library(conn, scripts, &reply).await?;
            ensure_script_cache(conn, scripts).await?;
            Ok(library)
        }
        Err(e) if is_unknown_command(&e) => ensure_script_cache(conn, scripts).await,
        Err(e) => Err(EngineError::command("FUNCTION LIST", e)),
    }
}

/// The code of library [`LIBRARY`] in a `FUNCTION LIST … WITHCODE` reply (which lists every library
/// whose name contains the pattern).
fn loaded_code(reply: &Value) -> Option<String> {
    value_items(reply)?.iter().find_map(|lib| {
        let pairs = value_pairs(lib)?;
        let name = super::field(&pairs, "library_name").and_then(value_str)?;
        (name == LIBRARY).then(|| super::field(&pairs, "library_code").and_then(value_str)).flatten()
    })
}

async fn ensure_library(conn: &mut impl RedisConn, scripts: &[ServerScript], listed: &Value) -> Result<LoadOutcome> {
    let loaded = loaded_code(listed);
    if scripts.is_empty() {
        if loaded.is_some() {
            let _: Value = redis::cmd("FUNCTION")
                .arg("DELETE")
                .arg(LIBRARY)
                .query_async(conn)
                .await
                .map_err(|e| EngineError::command(format!("FUNCTION DELETE {LIBRARY}"), e))?;
            return Ok(LoadOutcome::Reloaded { reason: format!("library {LIBRARY} is not used; deleted") });
        }
        return Ok(LoadOutcome::AlreadyLoaded);
    }
    let code = library_code(scripts);
    if loaded.as_deref() == Some(code.as_str()) {
        return Ok(LoadOutcome::AlreadyLoaded);
    }
    let _: Value = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(&code)
        .query_async(conn)
        .await
        .map_err(|e| EngineError::command(format!("FUNCTION LOAD REPLACE {LIBRARY}"), e))?;
    Ok(match loaded {
        None => LoadOutcome::Loaded,
        Some(_) => LoadOutcome::Reloaded { reason: format!("library {LIBRARY} had other code") },
    })
}

async fn ensure_script_cache(conn: &mut impl RedisConn, scripts: &[ServerScript]) -> Result<LoadOutcome> {
    if scripts.is_empty() {
        return Ok(LoadOutcome::AlreadyLoaded);
    }
    let shas: Vec<String> = scripts.iter().map(ServerScript::sha1).collect();
    let exists: Vec<bool> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&shas)
        .query_async(conn)
        .await
        .map_err(|e| EngineError::command("SCRIPT EXISTS", e))?;
    let missing: Vec<&ServerScript> = scripts.iter().zip(&exists).filter(|(_, e)| !**e).map(|(s, _)| s).collect();
    if missing.is_empty() {
        return Ok(LoadOutcome::AlreadyLoaded);
    }
    for s in &missing {
        let _: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(s.body)
            .query_async(conn)
            .await
            .map_err(|e| EngineError::command(format!("SCRIPT LOAD {}", s.name), e))?;
    }
    Ok(if missing.len() == scripts.len() {
        LoadOutcome::Loaded
    } else {
        let names: Vec<&str> = missing.iter().map(|s| s.name).collect();
        LoadOutcome::Reloaded { reason: format!("{} missing from the script cache", names.join(", ")) }
    })
}

const UNKNOWN: u8 = 0;
const FUNCTIONS: u8 = 1;
const SCRIPT_CACHE: u8 = 2;

/// Calls the operator's scripts: `FCALL`, or `EVALSHA` on a Redis without Functions (found out on the
/// first call and remembered). Keep one per connection (or per Redis): cheap, and shareable.
#[derive(Debug, Default)]
pub struct Caller {
    mode: AtomicU8,
}

impl Caller {
    pub fn new() -> Self {
        Self::default()
    }

    /// `FCALL <name> <keys…> <args…>` (or `EVALSHA`). A script that is not loaded is
    /// [`EngineError::ScriptMissing`]; any other failure [`EngineError::Command`] naming the script,
    /// with Redis' error as its `source`.
    pub async fn call<T: FromRedisValue, A: ToRedisArgs>(
        &self,
        conn: &mut impl RedisConn,
        script: &ServerScript,
        keys: &[&str],
        args: &[A],
    ) -> Result<T> {
        let mode = self.mode.load(Ordering::Relaxed);
        if mode != SCRIPT_CACHE {
            let reply =
                redis::cmd("FCALL").arg(script.name).arg(keys.len()).arg(keys).arg(args).query_async(conn).await;
            match reply {
                Ok(v) => {
                    self.mode.store(FUNCTIONS, Ordering::Relaxed);
                    return Ok(v);
                }
                // Redis 6.2, or a user allowed EVALSHA only (the gears engine's rules).
                Err(e) if mode == UNKNOWN && (is_unknown_command(&e) || is_fcall_refused(&e)) => {
                    self.mode.store(SCRIPT_CACHE, Ordering::Relaxed);
                }
                Err(e) => return Err(map_error(script, "FCALL", e)),
            }
        }
        redis::cmd("EVALSHA")
            .arg(script.sha1())
            .arg(keys.len())
            .arg(keys)
            .arg(args)
            .query_async(conn)
            .await
            .map_err(|e| map_error(script, "EVALSHA", e))
    }
}

fn map_error(script: &ServerScript, how: &str, e: redis::RedisError) -> EngineError {
    if is_missing(&e) {
        EngineError::ScriptMissing { name: script.name, detail: e.to_string() }
    } else {
        EngineError::command(format!("{how} {}", script.name), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_wraps_each_body_in_a_function_of_its_name() {
        let code = library_code(&[ServerScript { name: "popup_x", body: "return KEYS[1] .. ARGV[1]\n" }]);
        assert!(code.starts_with("#!lua name=popup\n"), "{code}");
        assert!(
            code.contains("redis.register_function('popup_x', function(KEYS, ARGV)\nreturn KEYS[1] .. ARGV[1]\nend)\n")
        );
        for kind in [EngineKind::Native, EngineKind::Triggers, EngineKind::Gears] {
            for s in scripts_for(kind) {
                assert!(s.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{}", s.name);
            }
        }
    }

    #[test]
    fn the_sha_is_the_one_redis_computes() {
        assert_eq!(ServerScript { name: "x", body: "return 1" }.sha1(), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }
}
