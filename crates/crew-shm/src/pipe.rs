//! [`Pipe`] and [`Connection`]: a duplex channel between two ends, like
//! `multiprocessing.Pipe()`, made of two [`Queue`]s crossed over.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, PutError};
use crate::queue::Queue;
use crate::sys::Deadline;

/// Makes connected pairs of [`Connection`]s, like `multiprocessing.Pipe()`.
///
/// Only an associated function; no `Pipe` value exists.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
/// use crew::Pipe;
///
/// let (parent, child) = Pipe::<String>::new()?;
/// child.send("ping".to_string()).unwrap(); // typically in another process
/// assert_eq!(parent.recv().unwrap(), "ping");
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Pipe<T> {
    _never: std::convert::Infallible,
    _type: PhantomData<fn(T) -> T>,
}

impl<T> fmt::Debug for Pipe<T> {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self._never {}
    }
}

impl<T> Pipe<T> {
    /// Creates a duplex pipe: what one end sends, the other receives.
    ///
    /// Each direction is an "unbounded" [`Queue`] (1 GiB of sparse address
    /// space), so `send` does not block in practice.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let (a, b) = crew::Pipe::<u32>::new()?;
    /// a.send(1).unwrap();
    /// b.send(2).unwrap();
    /// assert_eq!((a.recv().unwrap(), b.recv().unwrap()), (2, 1));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Fails if the shared memory cannot be created.
    #[allow(clippy::new_ret_no_self)] // like Python's Pipe(): returns the two ends
    pub fn new() -> io::Result<(Connection<T>, Connection<T>)> {
        let a_to_b = Queue::new()?;
        let b_to_a = Queue::new()?;
        Ok((
            Connection {
                outgoing: a_to_b.clone(),
                incoming: b_to_a.clone(),
            },
            Connection {
                outgoing: b_to_a,
                incoming: a_to_b,
            },
        ))
    }
}

/// One end of a [`Pipe`]: sends to and receives from the other end, in any
/// process that holds it.
///
/// Every clone (and deserialized copy) is the same end: items sent by any of
/// them arrive at the other end in the order each sent them.
///
/// # Examples
///
/// ```
/// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
/// let (a, b) = crew::Pipe::<u8>::new()?;
/// a.send(7).unwrap();
/// assert!(b.poll(std::time::Duration::ZERO));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Connection<T> {
    outgoing: Queue<T>,
    incoming: Queue<T>,
}

impl<T> Clone for Connection<T> {
    fn clone(&self) -> Self {
        Connection {
            outgoing: self.outgoing.clone(),
            incoming: self.incoming.clone(),
        }
    }
}

impl<T> fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("pending", &self.incoming.len())
            .field("is_closed", &self.is_closed())
            .finish()
    }
}

impl<T> Connection<T> {
    /// Closes both directions, for both ends: sends fail from now on, and
    /// receives drain what was sent, then fail with [`Error::is_closed`].
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let (a, b) = crew::Pipe::<u8>::new()?;
    /// a.send(1).unwrap();
    /// a.close();
    /// assert_eq!(b.recv().unwrap(), 1);
    /// assert!(b.recv().unwrap_err().is_closed());
    /// assert!(b.send(2).unwrap_err().is_closed());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn close(&self) {
        self.outgoing.close();
        self.incoming.close();
    }

    /// Whether the pipe has been closed by either end.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let (a, b) = crew::Pipe::<u8>::new()?;
    /// b.close();
    /// assert!(a.is_closed());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.outgoing.is_closed()
    }

    /// Waits at most `timeout` until something can be received: an item, or
    /// the news that the pipe is closed. Returns whether `recv` would return
    /// at once.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// # use std::time::Duration;
    /// let (a, b) = crew::Pipe::<u8>::new()?;
    /// assert!(!b.poll(Duration::from_millis(1)));
    /// a.send(1).unwrap();
    /// assert!(b.poll(Duration::from_millis(1)));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn poll(&self, timeout: Duration) -> bool {
        self.incoming.wait_readable(Deadline::after(timeout))
    }
}

impl<T: Serialize + DeserializeOwned> Connection<T> {
    /// Sends `item` to the other end.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let (a, b) = crew::Pipe::<(u8, f32)>::new()?;
    /// a.send((1, 0.5)).unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Queue::put`]: the item comes back if the pipe is closed, the item
    /// is too large or cannot be encoded.
    pub fn send(&self, item: T) -> Result<(), PutError<T>> {
        self.outgoing.put(item)
    }

    /// Receives the next item, blocking until one arrives.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let (a, b) = crew::Pipe::<u8>::new()?;
    /// a.send(3).unwrap();
    /// assert_eq!(b.recv().unwrap(), 3);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::is_closed`] once the pipe is closed and drained (Python's
    /// `EOFError`); [`Error::is_serialization`] if the item does not decode.
    pub fn recv(&self) -> Result<T, Error> {
        self.incoming.get()
    }

    /// Receives the next item, waiting at most `timeout`.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// # use std::time::Duration;
    /// let (a, b) = crew::Pipe::<u8>::new()?;
    /// assert!(b.recv_timeout(Duration::from_millis(1)).unwrap_err().is_timeout());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::is_timeout`] if nothing arrived; otherwise as
    /// [`recv`](Connection::recv).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, Error> {
        self.incoming.get_timeout(timeout)
    }

    /// Receives the next item only if one is there now.
    ///
    /// # Examples
    ///
    /// ```
    /// # mod crew { pub use crew_shm::*; pub mod shm { pub use crew_shm::*; } pub mod sync { pub use crew_shm::*; } }
    /// let (a, b) = crew::Pipe::<u8>::new()?;
    /// assert!(b.try_recv().unwrap_err().is_empty());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::is_empty`] if nothing is there; otherwise as
    /// [`recv`](Connection::recv).
    pub fn try_recv(&self) -> Result<T, Error> {
        self.incoming.try_get()
    }
}
