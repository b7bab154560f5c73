//! A pub/sub subscription that comes back: [`Subscriber::run`] hands every
//! message of one channel to a callback, reconnects and subscribes again
//! when the connection drops, and returns when its owner says to stop.
//! Messages published while it was disconnected are lost (pub/sub keeps
//! nothing): use it for requests that are also safe to miss, as cancels and
//! control requests are.

use std::time::Duration;

use crew_core::Result;
use redis::Client;

/// A subscription to one channel that reconnects on its own.
///
/// # Examples
///
/// ```no_run
/// use std::sync::atomic::{AtomicBool, Ordering};
/// let stop = AtomicBool::new(false);
/// let sub = crew_redis::Subscriber::new("redis://127.0.0.1:6379", None, "news")?;
/// sub.run(|| stop.load(Ordering::Relaxed), |payload| println!("{} bytes", payload.len()));
/// # Ok::<(), crew_core::Error>(())
/// ```
pub struct Subscriber {
    client: Client,
    channel: String,
    /// How often `stop` is asked while no message comes.
    poll: Duration,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Subscriber {
    /// A subscriber to `channel` on the Redis at `url` (`ca`: as
    /// [`client`](crate::client)). Connects only in [`run`](Self::run).
    ///
    /// # Errors
    ///
    /// `is_invalid_input` for a bad URL; `is_io` if the `ca` file cannot
    /// be read.
    pub fn new(url: &str, ca: Option<&std::path::Path>, channel: &str) -> Result<Subscriber> {
        Ok(Subscriber {
            client: crate::link::client(url, ca)?,
            channel: channel.to_owned(),
            poll: Duration::from_millis(200),
        })
    }

    /// Asks `stop` this often while no message comes (default 200 ms): the
    /// longest [`run`](Self::run) takes to return after `stop` turns true.
    pub fn poll(mut self, every: Duration) -> Subscriber {
        self.poll = every.max(Duration::from_millis(1));
        self
    }

    /// Calls `on_message` with the payload of every message, in order,
    /// until `stop` returns true; reconnects (every 200 ms while Redis is
    /// away) after a dropped connection.
    pub fn run(&self, stop: impl Fn() -> bool, mut on_message: impl FnMut(&[u8])) {
        let pause = Duration::from_millis(200);
        while !stop() {
            let Ok(mut con) = self
                .client
                .get_connection_with_timeout(Duration::from_secs(5))
            else {
                std::thread::sleep(pause);
                continue;
            };
            let mut pubsub = con.as_pubsub();
            if pubsub.subscribe(&self.channel).is_err()
                || pubsub.set_read_timeout(Some(self.poll)).is_err()
            {
                std::thread::sleep(pause);
                continue;
            }
            while !stop() {
                match pubsub.get_message() {
                    Ok(msg) => on_message(msg.get_payload_bytes()),
                    Err(e) if e.is_timeout() => {}
                    Err(_) => break, // reconnect
                }
            }
        }
    }
}
