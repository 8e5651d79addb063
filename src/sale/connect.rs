//! Reaching Redis: URLs and passwords, the three kinds of connection, and what a failure to connect
//! means (unreachable, wrong password, not Redis at all).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};

use super::{EngineError, Result};

/// Any async Redis connection: [`MultiplexedConnection`] or [`ConnectionManager`] (which
/// reconnects by itself; the native worker uses it).
pub trait RedisConn: ConnectionLike + Send {}
impl<T: ConnectionLike + Send> RedisConn for T {}

/// Parse a Redis URL, applying `password` when the URL has none.
pub fn connection_info(url: &str, password: Option<&str>) -> Result<(redis::ConnectionInfo, String)> {
    use redis::IntoConnectionInfo;
    let info =
        url.into_connection_info().map_err(|e| EngineError::InvalidUrl { url: redact(url), reason: e.to_string() })?;
    let addr = info.addr().to_string();
    let info = match password.filter(|p| !p.is_empty()) {
        Some(pw) if info.redis_settings().password().is_none() => {
            let settings = info.redis_settings().clone().set_password(pw);
            info.set_redis_settings(settings)
        }
        _ => info,
    };
    Ok((info, addr))
}

/// Hide a password in a URL for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// Connect (5 s connect timeout, 30 s response timeout) and PING, mapping failures to
/// [`EngineError::Connect`] / [`EngineError::Auth`]. Returns the connection and `host:port`.
pub async fn connect(url: &str, password: Option<&str>) -> Result<(MultiplexedConnection, String)> {
    let (info, addr) = connection_info(url, password)?;
    connect_to(url, info, addr).await
}

/// Like [`connect`], for a client that only reads (the terminal dashboard, e.g. as `popup-grafana`):
/// without the library's `CLIENT SETINFO`, which such a user may not send and Redis would log as
/// refused.
pub async fn connect_reader(url: &str, password: Option<&str>) -> Result<(MultiplexedConnection, String)> {
    let (info, addr) = connection_info(url, password)?;
    let settings = info.redis_settings().clone().set_skip_set_lib_name();
    connect_to(url, info.set_redis_settings(settings), addr).await
}

async fn connect_to(url: &str, info: redis::ConnectionInfo, addr: String) -> Result<(MultiplexedConnection, String)> {
    let client =
        redis::Client::open(info).map_err(|e| EngineError::InvalidUrl { url: redact(url), reason: e.to_string() })?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(30)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| classify_connect_error(&addr, e))?;
    let _: String = redis::cmd("PING").query_async(&mut conn).await.map_err(|e| classify_connect_error(&addr, e))?;
    Ok((conn, addr))
}

/// Like [`connect`], but a [`ConnectionManager`] that reconnects after the connection drops
/// (e.g. a Redis restart).
pub async fn connect_manager(url: &str, password: Option<&str>) -> Result<(ConnectionManager, String)> {
    let (info, addr) = connection_info(url, password)?;
    let client =
        redis::Client::open(info).map_err(|e| EngineError::InvalidUrl { url: redact(url), reason: e.to_string() })?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(30)))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(2));
    let mut conn =
        ConnectionManager::new_with_config(client, config).await.map_err(|e| classify_connect_error(&addr, e))?;
    let _: String = redis::cmd("PING").query_async(&mut conn).await.map_err(|e| classify_connect_error(&addr, e))?;
    Ok((conn, addr))
}

fn classify_connect_error(addr: &str, e: redis::RedisError) -> EngineError {
    let code = e.code().unwrap_or_default().to_string();
    let text = e.to_string();
    if e.kind() == redis::ErrorKind::AuthenticationFailed
        || code == "NOAUTH"
        || code == "WRONGPASS"
        || text.contains("NOAUTH")
        || text.contains("WRONGPASS")
        || text.contains("invalid password")
    {
        EngineError::Auth { addr: addr.to_string(), detail: text }
    } else if e.kind() == redis::ErrorKind::Parse || text.contains("Parse error") {
        // Something answered, but not in RESP: an HTTP server, SSH, another database...
        EngineError::NotRedis { addr: addr.to_string(), detail: text.split_whitespace().collect::<Vec<_>>().join(" ") }
    } else {
        EngineError::Connect { addr: addr.to_string(), source: e }
    }
}

/// The server address of a connection for messages: `laddr` of CLIENT INFO is the server-side
/// address the client is connected to.
pub(crate) async fn server_addr(conn: &mut impl RedisConn) -> String {
    let reply: redis::RedisResult<String> = redis::cmd("CLIENT").arg("INFO").query_async(conn).await;
    reply
        .ok()
        .and_then(|info| info.split_whitespace().find_map(|kv| kv.strip_prefix("laddr=").map(str::to_string)))
        .unwrap_or_else(|| "the connected Redis".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_from_env_only_when_url_has_none() {
        let (info, addr) = connection_info("redis://127.0.0.1:6390", Some("pw")).unwrap();
        assert_eq!(addr, "127.0.0.1:6390");
        assert_eq!(info.redis_settings().password(), Some("pw"));
        let (info, _) = connection_info("redis://:inurl@127.0.0.1:6390", Some("pw")).unwrap();
        assert_eq!(info.redis_settings().password(), Some("inurl"));
        assert!(connection_info("nonsense://x", None).is_err());
        assert_eq!(redact("redis://:secret@h:1"), "redis://***@h:1");
    }
}
