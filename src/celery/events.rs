//! Celery's worker and task events, so `celery events`, `celery inspect`
//! monitors and Flower see crew nodes: JSON events published to the
//! `celeryev` fanout exchange, which kombu's Redis transport maps onto the
//! pub/sub channel `/<db>.celeryev/<routing key>`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use crew_redis::Link;
use serde_json::{Map, Value, json};

use super::wire;

/// The database number of a Redis URL (`redis://host:port/3`,
/// `redis+unix:///path?db=3`), 0 when it names none.
pub(crate) fn db_of(url: &str) -> u32 {
    if let Some((_, q)) = url.split_once("?db=") {
        return q
            .split('&')
            .next()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
    }
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    if url.starts_with("redis+unix") || url.starts_with("unix") {
        return 0;
    }
    rest.split_once('/')
        .and_then(|(_, db)| db.split(['?', '/']).next())
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}

/// An event on its way: routing key and fields.
type Event = (String, Map<String, Value>);

/// Sends events from any thread; one thread publishes them.
pub(crate) struct Events {
    tx: Mutex<Option<Sender<Event>>>,
    hostname: String,
    clock: AtomicU64,
    /// Whether task events are sent (worker events always are).
    tasks: AtomicBool,
    /// The pub/sub channel prefix of the broker's database.
    prefix: String,
}

impl Events {
    /// Events of `hostname`, published by a thread on `link`.
    pub(crate) fn start(hostname: String, url: &str, tasks: bool) -> crew_core::Result<Events> {
        let link = Link::open(url, Duration::from_secs(10))?;
        let prefix = format!("/{}.celeryev/", db_of(url));
        let (tx, rx) = mpsc::channel();
        let thread_prefix = prefix.clone();
        std::thread::Builder::new()
            .name("crew-celery-events".into())
            .spawn(move || publish_loop(link, &thread_prefix, rx))
            .map_err(|e| crew_core::Error::io("starting the events thread", e))?;
        Ok(Events {
            tx: Mutex::new(Some(tx)),
            hostname,
            clock: AtomicU64::new(0),
            tasks: AtomicBool::new(tasks),
            prefix,
        })
    }

    /// Switches task events on or off (`celery control enable_events`).
    pub(crate) fn task_events(&self, on: bool) {
        self.tasks.store(on, Ordering::Relaxed);
    }

    /// Sends a task event, if task events are on.
    pub(crate) fn send_task_event(&self, kind: &str, fields: Value) {
        if self.tasks.load(Ordering::Relaxed) {
            self.send(kind, fields);
        }
    }

    /// A task event to publish by the caller, in its own pipeline: the
    /// channel and the message, if task events are on.
    pub(crate) fn task_event_message(&self, kind: &str, fields: Value) -> Option<(String, String)> {
        if !self.tasks.load(Ordering::Relaxed) {
            return None;
        }
        let rk = kind.replace('-', ".");
        let ev = self.event(kind, fields);
        Some((format!("{}{rk}", self.prefix), envelope(&rk, &ev)))
    }

    /// Sends an event of `kind` (`task-succeeded`, `worker-heartbeat`) with
    /// `fields`.
    pub(crate) fn send(&self, kind: &str, fields: Value) {
        let ev = self.event(kind, fields);
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = tx.as_ref() {
            let _ = tx.send((kind.replace('-', "."), ev));
        }
    }

    /// The fields of an event of `kind`, with those every event has.
    fn event(&self, kind: &str, fields: Value) -> Map<String, Value> {
        let mut ev = match fields {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        ev.insert("type".into(), kind.into());
        ev.insert("hostname".into(), self.hostname.clone().into());
        ev.insert(
            "clock".into(),
            (self.clock.fetch_add(1, Ordering::Relaxed) + 1).into(),
        );
        ev.insert("timestamp".into(), wire::now().into());
        ev.insert("utcoffset".into(), 0.into());
        ev.insert("pid".into(), std::process::id().into());
        ev
    }

    /// Stops the publishing thread after what was sent.
    pub(crate) fn close(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

fn envelope(routing_key: &str, ev: &Map<String, Value>) -> String {
    let body = Value::Object(ev.clone()).to_string();
    json!({
        "body": BASE64.encode(body.as_bytes()),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"hostname": ev.get("hostname")},
        "properties": {
            "delivery_mode": 1,
            "delivery_info": {"exchange": "celeryev", "routing_key": routing_key},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": wire::new_id(),
        },
    })
    .to_string()
}

fn publish_loop(mut link: Link, prefix: &str, rx: Receiver<Event>) {
    // Events are best effort, as in Celery: an event that cannot be sent
    // within a few seconds is dropped.
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter().take(255));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let _ = link.call(&|| std::time::Instant::now() >= deadline, |con| {
            let mut p = redis::pipe();
            for (rk, ev) in &batch {
                p.cmd("PUBLISH")
                    .arg(format!("{prefix}{rk}"))
                    .arg(envelope(rk, ev))
                    .ignore();
            }
            p.query::<()>(con)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::db_of;

    #[test]
    fn database_numbers_of_urls() {
        assert_eq!(db_of("redis://127.0.0.1:6379/3"), 3);
        assert_eq!(db_of("redis://127.0.0.1:6379"), 0);
        assert_eq!(db_of("redis://:pw@h:1/2?x=1"), 2);
        assert_eq!(db_of("redis+unix:///tmp/r.sock?db=5"), 5);
        assert_eq!(db_of("redis+unix:///tmp/r.sock"), 0);
    }
}
