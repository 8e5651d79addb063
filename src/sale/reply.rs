//! Reading Redis replies the same way over RESP2 and RESP3.

use redis::Value;

/// A reply value as text (bulk/simple strings, integers, ok); None for nil and aggregates.
pub(crate) fn value_str(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Okay => Some("OK".into()),
        Value::Int(i) => Some(i.to_string()),
        Value::Double(d) => Some(d.to_string()),
        Value::Boolean(b) => Some(b.to_string()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// A bulk string reply, the way Redis sends text: the replies the parsers' unit tests feed them.
#[cfg(test)]
pub(crate) fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

pub(crate) fn value_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => value_str(other).and_then(|s| s.trim().parse().ok()),
    }
}

/// Key/value pairs of a RESP2 flat list or a RESP3 map.
pub(crate) fn value_pairs(v: &Value) -> Option<Vec<(String, &Value)>> {
    match v {
        Value::Array(items) if items.len() % 2 == 0 => {
            items.chunks(2).map(|kv| value_str(&kv[0]).map(|k| (k, &kv[1]))).collect()
        }
        Value::Map(pairs) => pairs.iter().map(|(k, v)| value_str(k).map(|k| (k, v))).collect(),
        _ => None,
    }
}

pub(crate) fn value_items(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

pub(crate) fn field<'a>(pairs: &'a [(String, &'a Value)], name: &str) -> Option<&'a Value> {
    pairs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
}

/// An integer exactly as Redis DECR reads it (no sign `+`, spaces or leading zeros), the same test
/// the engines' scripts make before they sell.
pub fn is_canonical_i64(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let canonical = digits == "0" || (!digits.is_empty() && !digits.starts_with('0'));
    canonical && digits.bytes().all(|b| b.is_ascii_digit()) && s != "-0" && s.parse::<i64>().is_ok()
}
