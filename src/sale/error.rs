//! Every failure of the sale half, each message naming the cause and the fix.

use super::EngineKind;

/// Every failure of the engine layer. Messages say what went wrong and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid Redis URL {url:?}: {reason}; use redis://[:password@]host:port[/db]")]
    InvalidUrl { url: String, reason: String },

    #[error(
        "cannot connect to Redis at {addr}: {source}; check that Redis is running there and the address/port are right"
    )]
    Connect {
        addr: String,
        #[source]
        source: redis::RedisError,
    },

    #[error(
        "the server at {addr} does not speak the Redis protocol (its reply to PING cannot be parsed: {detail}); check the host and port in the Redis URL"
    )]
    NotRedis { addr: String, detail: String },

    #[error(
        "Redis at {addr} rejected the credentials ({detail}); put the password in the URL (redis://:PASSWORD@host:port) or set REDIS_PASSWORD"
    )]
    Auth { addr: String, detail: String },

    #[error("Redis at {addr} has no {module} module (MODULE LIST shows: {found}); {fix}")]
    MissingModule { addr: String, module: &'static str, found: String, fix: &'static str },

    #[error("{engine} engine: loading the scripts into Redis at {addr} failed: {detail}")]
    ScriptLoad { engine: EngineKind, addr: String, detail: String },

    #[error(
        "the script {name} is not loaded in Redis ({detail}): the operator loads it (again after a Redis restart that lost it) on its next reconcile; retrying until then"
    )]
    ScriptMissing { name: &'static str, detail: String },

    #[error("Redis command {command} failed: {source}")]
    Command {
        command: String,
        #[source]
        source: redis::RedisError,
    },

    #[error("unexpected reply to {command}: {detail} (is this a compatible Redis/module version?)")]
    Protocol { command: String, detail: String },

    #[error("timed out after {secs}s waiting for {what}")]
    Timeout { what: String, secs: u64 },

    #[error("{0}")]
    Io(#[from] std::io::Error),

    #[error("{0}")]
    Other(String),
}

impl EngineError {
    /// Wrap a command error, recognising auth/connection problems so their message names the fix.
    pub fn command(command: impl Into<String>, source: redis::RedisError) -> Self {
        EngineError::Command { command: command.into(), source }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_name_cause_and_fix() {
        let e = EngineError::MissingModule {
            addr: "h:1".into(),
            module: "RedisGears 1",
            found: "timeseries 11202".into(),
            fix: "use engine triggers or native",
        };
        assert_eq!(
            e.to_string(),
            "Redis at h:1 has no RedisGears 1 module (MODULE LIST shows: timeseries 11202); use engine triggers or native"
        );
    }
}
