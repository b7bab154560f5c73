//! Celery's remote control (`celery inspect`, `celery control`): requests
//! arrive on the `celery.pidbox` fanout exchange, which kombu's Redis
//! transport maps onto the pub/sub channel `/<db>.celery.pidbox`; a reply
//! goes to the `reply.celery.pidbox` direct exchange, that is to the lists
//! bound to it under the request's routing key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

use super::wire;

/// The broadcast exchange of Celery's default mailbox.
pub(crate) const EXCHANGE: &str = "celery.pidbox";

/// The pub/sub channel of the mailbox on database `db`.
pub(crate) fn channel(db: u32) -> String {
    format!("/{db}.{EXCHANGE}")
}

/// A remote control request addressed to a node.
#[derive(Debug, PartialEq)]
pub(crate) struct Request {
    /// `ping`, `active`, `stats`, `registered`, `shutdown` …
    pub(crate) method: String,
    /// Where to reply (exchange, routing key) and the ticket the caller
    /// matches replies with; `None` for a cast.
    pub(crate) reply: Option<(String, String, String)>,
}

/// The request in a pidbox message, if it is one for `hostname` (named in
/// its destination, matching its pattern, or addressed to all) that has
/// not expired at `now`.
pub(crate) fn decode(payload: &[u8], hostname: &str, now: f64) -> Option<Request> {
    let env: Value = serde_json::from_slice(payload).ok()?;
    let expires = env
        .get("headers")
        .and_then(|h| h.get("expires"))
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    if expires > 0.0 && expires < now {
        return None;
    }
    let raw = env.get("body")?.as_str()?;
    let base64 = env
        .get("properties")
        .and_then(|p| p.get("body_encoding"))
        .and_then(Value::as_str)
        == Some("base64");
    let body: Value = if base64 {
        serde_json::from_slice(&BASE64.decode(raw).ok()?).ok()?
    } else {
        serde_json::from_str(raw).ok()?
    };
    match body.get("destination") {
        Some(Value::Array(d)) if !d.is_empty() => {
            if !d.iter().any(|x| x.as_str() == Some(hostname)) {
                return None;
            }
        }
        _ => {
            let pattern = body.get("pattern").and_then(Value::as_str);
            let matcher = body.get("matcher").and_then(Value::as_str);
            if let (Some(p), Some(m)) = (pattern, matcher)
                && !matches(hostname, p, m)
            {
                return None;
            }
        }
    }
    let method = body.get("method")?.as_str()?.to_owned();
    let reply = body.get("reply_to").and_then(|r| {
        Some((
            r.get("exchange")?.as_str()?.to_owned(),
            r.get("routing_key")?.as_str()?.to_owned(),
            body.get("ticket")?.as_str()?.to_owned(),
        ))
    });
    Some(Request { method, reply })
}

/// kombu's `match(hostname, pattern, matcher)` for the matchers crew knows
/// (`glob`, and exact text otherwise: crew carries no regex engine).
fn matches(hostname: &str, pattern: &str, matcher: &str) -> bool {
    if matcher == "glob" {
        glob(hostname.as_bytes(), pattern.as_bytes())
    } else {
        hostname == pattern
    }
}

fn glob(s: &[u8], p: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob(&s[i..], rest)),
        Some((b'?', rest)) => !s.is_empty() && glob(&s[1..], rest),
        Some((c, rest)) => s.first() == Some(c) && glob(&s[1..], rest),
    }
}

/// The kombu message of a reply `{hostname: data}` to the request with
/// `ticket`, sent through `exchange` with `routing_key`.
pub(crate) fn reply_envelope(
    hostname: &str,
    data: Value,
    exchange: &str,
    routing_key: &str,
    ticket: &str,
    clock: u64,
) -> String {
    let mut body = Map::new();
    body.insert(hostname.to_owned(), data);
    let body = Value::Object(body).to_string();
    json!({
        "body": BASE64.encode(body.as_bytes()),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"ticket": ticket, "clock": clock},
        "properties": {
            "delivery_mode": 1,
            "delivery_info": {"exchange": exchange, "routing_key": routing_key},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": wire::new_id(),
        },
    })
    .to_string()
}

/// The queues a direct exchange's bindings (kombu's
/// `_kombu.binding.<exchange>` members, `routing key SEP pattern SEP
/// queue`) route `routing_key` to.
pub(crate) fn direct_targets(bindings: &[String], routing_key: &str) -> Vec<String> {
    bindings
        .iter()
        .filter_map(|b| {
            let mut parts = b.split(wire::SEP);
            let rk = parts.next()?;
            let _pattern = parts.next()?;
            let queue = parts.next()?;
            (rk == routing_key).then(|| queue.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value, expires: f64) -> Vec<u8> {
        json!({
            "body": BASE64.encode(body.to_string()),
            "headers": {"clock": 1, "expires": expires},
            "properties": {"body_encoding": "base64"},
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn requests_for_this_node_are_decoded() {
        let ping = json!({
            "method": "ping", "arguments": {}, "destination": ["crew@h.1"],
            "pattern": null, "matcher": null, "ticket": "t1",
            "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "oid"},
        });
        let r = decode(&request(ping.clone(), 0.0), "crew@h.1", 10.0).expect("a request");
        assert_eq!(r.method, "ping");
        assert_eq!(
            r.reply,
            Some(("reply.celery.pidbox".into(), "oid".into(), "t1".into()))
        );
        assert_eq!(
            decode(&request(ping.clone(), 0.0), "crew@other.2", 10.0),
            None
        );
        assert_eq!(decode(&request(ping, 5.0), "crew@h.1", 10.0), None);
        let all = json!({"method": "shutdown", "destination": null});
        let r = decode(&request(all, 0.0), "crew@h.1", 10.0).expect("a cast");
        assert_eq!((r.method.as_str(), r.reply), ("shutdown", None));
        let glob = json!({"method": "ping", "pattern": "crew@*", "matcher": "glob"});
        assert!(decode(&request(glob.clone(), 0.0), "crew@h.1", 1.0).is_some());
        assert!(decode(&request(glob, 0.0), "celery@h", 1.0).is_none());
    }

    #[test]
    fn replies_go_to_the_bound_queues() {
        let sep = wire::SEP;
        let b = vec![
            format!("oid{sep}{sep}oid.reply.celery.pidbox"),
            format!("other{sep}{sep}other.reply.celery.pidbox"),
        ];
        assert_eq!(direct_targets(&b, "oid"), ["oid.reply.celery.pidbox"]);
        let env: Value = serde_json::from_str(&reply_envelope(
            "n",
            json!({"ok": "pong"}),
            "x",
            "oid",
            "t",
            3,
        ))
        .expect("json");
        assert_eq!(env["headers"]["ticket"], "t");
        let body = BASE64
            .decode(env["body"].as_str().expect("body"))
            .expect("base64");
        assert_eq!(
            serde_json::from_slice::<Value>(&body).expect("json"),
            json!({"n": {"ok": "pong"}})
        );
    }
}
