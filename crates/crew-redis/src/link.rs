//! A connection that comes back: every Redis call of the driver and the
//! node goes through [`Link::call`], which reconnects (with backoff) when
//! the connection drops, Redis restarts, or Redis is still loading its
//! data, and gives up only when its owner says to stop. Errors Redis
//! returns for a command (a wrong type, a missing group) go back to the
//! caller.

use std::path::Path;
use std::time::{Duration, Instant};

use crew_core::{Error, Result};
use redis::{Client, Connection, RedisError};

/// A Redis connection that reconnects.
pub struct Link {
    client: Client,
    con: Option<Connection>,
    read_timeout: Duration,
    /// How many times this link connected (1 after the first).
    connects: u64,
    /// The last transient failure, for the error of a call that gave up.
    last_failure: Option<String>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("connected", &self.con.is_some())
            .field("connects", &self.connects)
            .finish()
    }
}

/// True for the errors a reconnect can cure.
pub(crate) fn is_transient(e: &RedisError) -> bool {
    // Wrong credentials, missing rights or an untrusted certificate do not
    // cure themselves: say so at once instead of retrying until a deadline.
    let text = e.to_string();
    if [
        "WRONGPASS",
        "NOAUTH",
        "NOPERM",
        "invalid username-password",
        "invalid peer certificate",
        "authentication failed",
    ]
    .iter()
    .any(|w| text.contains(w))
        || e.code()
            .is_some_and(|c| matches!(c, "WRONGPASS" | "NOAUTH" | "NOPERM"))
    {
        return false;
    }
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || matches!(
            e.code(),
            Some("LOADING" | "MASTERDOWN" | "TRYAGAIN" | "READONLY")
        )
}

/// The environment variable naming a PEM file of the certificate
/// authorities to trust for `rediss://` URLs (default: the system's).
pub const ENV_TLS_CA: &str = "CREW_TLS_CA";

/// A client for `url`. A `rediss://` URL is TLS (rustls), trusting the
/// authorities in the PEM file `ca`, else in `CREW_TLS_CA`, else the
/// system's; `rediss://host/#insecure` skips verification.
///
/// # Errors
///
/// `is_invalid_input` if `url` is not a Redis URL; `is_io` if `ca` cannot
/// be read.
pub fn client(url: &str, ca: Option<&Path>) -> Result<Client> {
    let bad = |e: RedisError| {
        Error::invalid_input(format!(
            "not a Redis URL ({url}): {e}; expected redis://[user:password@]host:port[/db], \
             rediss://… for TLS or redis+unix:///path/to/socket"
        ))
    };
    if !url.starts_with("rediss") {
        return Client::open(url).map_err(bad);
    }
    let ca = ca
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(ENV_TLS_CA).map(std::path::PathBuf::from));
    match ca {
        None => Client::open(url).map_err(bad),
        Some(path) => {
            let pem = std::fs::read(&path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
            .map_err(bad)
        }
    }
}

impl Link {
    /// A link to `url`; connects on first use. TLS as [`client`] says,
    /// with the authorities of `CREW_TLS_CA`.
    ///
    /// # Errors
    ///
    /// `is_invalid_input` if `url` is not a Redis URL.
    pub fn open(url: &str, read_timeout: Duration) -> Result<Link> {
        Link::open_with_ca(url, None, read_timeout)
    }

    /// A link to `url` trusting the certificate authorities in `ca` (PEM)
    /// for `rediss://`.
    ///
    /// # Errors
    ///
    /// As [`client`].
    pub fn open_with_ca(url: &str, ca: Option<&Path>, read_timeout: Duration) -> Result<Link> {
        let client = client(url, ca)?;
        Ok(Link {
            client,
            con: None,
            read_timeout,
            connects: 0,
            last_failure: None,
        })
    }

    /// How many times this link has connected.
    pub fn connects(&self) -> u64 {
        self.connects
    }

    fn connection(&mut self) -> std::result::Result<&mut Connection, RedisError> {
        if self.con.is_none() {
            let con = self
                .client
                .get_connection_with_timeout(Duration::from_secs(5))?;
            con.set_read_timeout(Some(self.read_timeout))?;
            con.set_write_timeout(Some(Duration::from_secs(10)))?;
            self.con = Some(con);
            self.connects += 1;
        }
        Ok(self.con.as_mut().expect("just connected"))
    }

    /// Runs `f` on the connection, reconnecting and running it again after
    /// a transient failure, until it succeeds, fails for good, or `stop()`
    /// says to give up (then `None`).
    ///
    /// `f` may run more than once: it must be safe to repeat (or its
    /// repetition harmless, as a duplicate task entry is: results are
    /// deduplicated by task id).
    pub fn call<T>(
        &mut self,
        stop: &dyn Fn() -> bool,
        mut f: impl FnMut(&mut Connection) -> redis::RedisResult<T>,
    ) -> Option<redis::RedisResult<T>> {
        let mut backoff = Duration::from_millis(5);
        loop {
            let outcome = self.connection().and_then(&mut f);
            match outcome {
                Err(e) if is_transient(&e) => {
                    self.con = None;
                    self.last_failure = Some(e.to_string());
                    if stop() {
                        return None;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                other => return Some(other),
            }
        }
    }

    /// Like [`call`](Link::call), but gives up at `deadline`.
    ///
    /// # Errors
    ///
    /// `is_io` if Redis cannot be reached by then, or the error Redis gave.
    pub fn call_until<T>(
        &mut self,
        deadline: Instant,
        what: &str,
        f: impl FnMut(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        match self.call(&|| Instant::now() >= deadline, f) {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(redis_error(what, e)),
            None => {
                // Say where, why, and what to check: the error is often the
                // first thing a newcomer sees of a cluster that is not up.
                let addr = self.client.get_connection_info().addr().to_string();
                let why = self
                    .last_failure
                    .take()
                    .unwrap_or_else(|| "no answer".into());
                let unreachable = format!("Redis at {addr} cannot be reached ({why})");
                Err(Error::io(
                    format!(
                        "{what}: {unreachable}; is redis-server running there, and is the URL right?"
                    ),
                    std::io::Error::new(std::io::ErrorKind::TimedOut, unreachable),
                ))
            }
        }
    }
}

/// A Redis error as a crew error.
pub(crate) fn redis_error(what: &str, e: RedisError) -> Error {
    Error::io(what.to_owned(), std::io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_that_is_down_is_named_with_what_to_check() {
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut link =
            Link::open(&format!("redis://127.0.0.1:{port}"), Duration::from_secs(1)).unwrap();
        let deadline = Instant::now() + Duration::from_millis(300);
        let e = link
            .call_until(deadline, "creating the queue", |con| {
                redis::cmd("PING").query::<String>(con)
            })
            .unwrap_err();
        assert!(e.is_io(), "{e:?}");
        let text = e.to_string();
        assert!(
            text.starts_with("i/o error while creating the queue: "),
            "{text}"
        );
        assert!(
            text.contains(&format!("Redis at 127.0.0.1:{port} cannot be reached (")),
            "{text}"
        );
        assert!(text.contains("is redis-server running there"), "{text}");
    }

    #[test]
    fn a_url_without_its_scheme_is_refused_with_the_forms_that_work() {
        let e = Link::open("localhost:6379", Duration::from_secs(1)).unwrap_err();
        assert!(e.is_invalid_input(), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("not a Redis URL (localhost:6379)"), "{text}");
        assert!(
            text.contains("expected redis://[user:password@]host:port[/db]"),
            "{text}"
        );
    }
}
