//! A private `redis-server` on this machine, and worker nodes beside it:
//! what the tests, `crew demo --cluster` and `crew bench cluster` start.
//!
//! Children are started from one keeper thread with `PR_SET_PDEATHSIG`, so
//! they die with that thread: when the `LocalRedis` is dropped, or when
//! this process ends in any way (a test binary never runs destructors of
//! statics), no `redis-server` or node is left behind.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};

use crew_core::{Error, Result};

enum Order {
    Spawn(Box<Command>, Sender<std::io::Result<u32>>),
    /// Kill (SIGKILL) and reap one child, then answer.
    Kill(u32, Sender<()>),
    Stop,
}

/// Spawns children from one long-lived thread (see the module docs).
struct Keeper {
    orders: Sender<Order>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Keeper {
    fn new() -> Result<Keeper> {
        let (tx, rx) = mpsc::channel::<Order>();
        let thread = std::thread::Builder::new()
            .name("crew-local-redis".into())
            .spawn(move || {
                let mut children: Vec<Child> = Vec::new();
                loop {
                    let order = match rx.recv_timeout(Duration::from_millis(200)) {
                        Ok(o) => o,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            children.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => Order::Stop,
                    };
                    match order {
                        Order::Spawn(mut cmd, answer) => {
                            // SAFETY: `prctl` is async-signal-safe; nothing
                            // else runs between fork and exec.
                            unsafe {
                                cmd.pre_exec(|| {
                                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                                    Ok(())
                                });
                            }
                            let r = cmd.spawn().map(|c| {
                                let pid = c.id();
                                children.push(c);
                                pid
                            });
                            let _ = answer.send(r);
                        }
                        Order::Kill(pid, answer) => {
                            if let Some(i) = children.iter().position(|c| c.id() == pid) {
                                let mut c = children.swap_remove(i);
                                let _ = c.kill();
                                let _ = c.wait();
                            }
                            let _ = answer.send(());
                        }
                        Order::Stop => {
                            for c in &mut children {
                                let _ = c.kill();
                            }
                            for c in &mut children {
                                let _ = c.wait();
                            }
                            return;
                        }
                    }
                }
            })
            .map_err(|e| Error::io("starting the local Redis keeper", e))?;
        Ok(Keeper {
            orders: tx,
            thread: Some(thread),
        })
    }

    fn spawn(&self, cmd: Command) -> Result<u32> {
        let (tx, rx) = mpsc::channel();
        let _ = self.orders.send(Order::Spawn(Box::new(cmd), tx));
        match rx.recv() {
            Ok(r) => r.map_err(|e| Error::io("starting a process", e)),
            Err(_) => Err(Error::shutdown()),
        }
    }

    fn kill(&self, pid: u32) {
        let (tx, rx) = mpsc::channel();
        if self.orders.send(Order::Kill(pid, tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        let _ = self.orders.send(Order::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A `redis-server` of our own on a loopback port and a unix socket, in a
/// fresh directory; stopped (and the directory removed) on drop.
///
/// # Examples
///
/// ```no_run
/// # mod crew { pub use crew_core::{Error, Result}; pub mod cluster { pub use crew_redis::*; } }
/// let redis = crew::cluster::LocalRedis::start()?;
/// let cluster = crew::cluster::ClusterConfig::new(redis.url()).queue("demo");
/// let node = redis.spawn_node("demo", 2, &[])?;
/// # let _ = (cluster, node);
/// # Ok::<(), crew::Error>(())
/// ```
pub struct LocalRedis {
    keeper: Keeper,
    dir: PathBuf,
    port: u16,
    pid: u32,
    appendonly: bool,
    extra: Vec<String>,
    /// `(user, password)` the URLs carry.
    auth: Option<(String, String)>,
}

impl std::fmt::Debug for LocalRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRedis")
            .field("port", &self.port)
            .field("pid", &self.pid)
            .finish()
    }
}

/// A worker node started by [`LocalRedis::spawn_node`].
#[derive(Debug, Clone, Copy)]
pub struct NodeProcess {
    /// Its process id.
    pub pid: u32,
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io("finding a free loopback port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("finding a free loopback port", e))
}

impl LocalRedis {
    /// Starts `redis-server` (from `PATH`) without persistence.
    ///
    /// # Errors
    ///
    /// `is_io` if `redis-server` is missing (the message says how to
    /// install it) or does not answer within 10 s.
    pub fn start() -> Result<LocalRedis> {
        LocalRedis::start_with(false, &[])
    }

    /// Starts `redis-server` with `appendonly yes` and `appendfsync always`
    /// when `appendonly`, plus `extra` arguments (`--requirepass …`, …).
    ///
    /// # Errors
    ///
    /// As [`start`](LocalRedis::start).
    pub fn start_with(appendonly: bool, extra: &[&str]) -> Result<LocalRedis> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("crew-redis-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let mut r = LocalRedis {
            keeper: Keeper::new()?,
            dir,
            port: free_port()?,
            pid: 0,
            appendonly,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            auth: None,
        };
        r.launch()?;
        Ok(r)
    }

    /// Starts `redis-server` as a Redis Cluster of one shard
    /// (`cluster-enabled yes`, every slot on this node), without
    /// persistence: Redis then refuses any command or script whose keys are
    /// in different slots, as a real Redis Cluster does.
    ///
    /// # Errors
    ///
    /// As [`start`](LocalRedis::start); `is_io` also if the cluster does
    /// not report `cluster_state:ok` within 10 s.
    pub fn start_one_shard_cluster() -> Result<LocalRedis> {
        let r = LocalRedis::start_with(false, &["--cluster-enabled", "yes"])?;
        let fail = |what: &str, e: redis::RedisError| {
            Error::io(what.to_owned(), std::io::Error::other(e.to_string()))
        };
        let mut con = redis::Client::open(r.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
            .map_err(|e| fail("connecting to the cluster shard", e))?;
        redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(0)
            .arg(16383)
            .query::<()>(&mut con)
            .map_err(|e| fail("giving the shard every slot", e))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut con)
                .map_err(|e| fail("reading the cluster's state", e))?;
            if info.contains("cluster_state:ok") {
                return Ok(r);
            }
            if Instant::now() >= deadline {
                return Err(Error::io(
                    "waiting for the one-shard cluster",
                    std::io::Error::other("cluster_state is not ok after 10 s"),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts `redis-server` whose only user is `user` with `password`
    /// (the `default` user is off): an ACL user, as a shared Redis would
    /// have. [`url`](LocalRedis::url) and [`tcp_url`](LocalRedis::tcp_url)
    /// carry the credentials.
    ///
    /// # Errors
    ///
    /// As [`start`](LocalRedis::start).
    pub fn start_with_user(user: &str, password: &str) -> Result<LocalRedis> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("crew-redis-acl-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let acl = dir.join("users.acl");
        std::fs::write(
            &acl,
            format!("user {user} on >{password} ~* &* +@all\nuser default off\n"),
        )
        .map_err(|e| Error::io(format!("writing {}", acl.display()), e))?;
        let mut r = LocalRedis {
            keeper: Keeper::new()?,
            dir,
            port: free_port()?,
            pid: 0,
            appendonly: false,
            extra: vec!["--aclfile".into(), acl.display().to_string()],
            auth: Some((user.to_owned(), password.to_owned())),
        };
        r.launch()?;
        Ok(r)
    }

    fn launch(&mut self) -> Result<()> {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--unixsocket")
            .arg(self.socket())
            .arg("--unixsocketperm")
            .arg("700")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--save")
            .arg("")
            .arg("--daemonize")
            .arg("no")
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .arg("--maxmemory-policy")
            .arg("noeviction");
        if self.appendonly {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.args(&self.extra);
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        self.pid = self.keeper.spawn(cmd).map_err(|e| {
            Error::io(
                "starting redis-server",
                std::io::Error::other(format!(
                    "{e}; install Redis 7 or newer (Debian/Ubuntu: `apt-get install redis-server`)"
                )),
            )
        })?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.ping() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                return Err(Error::io(
                    "starting redis-server",
                    std::io::Error::other(format!("no answer within 10 s; its log:\n{log}")),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut con) = client.get_connection_with_timeout(Duration::from_millis(500)) else {
            return false;
        };
        // `LOADING` (an append-only file being read) is not ready yet.
        redis::cmd("PING").query::<String>(&mut con).is_ok()
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    /// The URL of its unix socket (`redis+unix:///…`).
    pub fn url(&self) -> String {
        match &self.auth {
            None => format!("redis+unix://{}", self.socket().display()),
            Some((u, p)) => format!("redis+unix://{}?user={u}&pass={p}", self.socket().display()),
        }
    }

    /// The URL of its loopback TCP port (`redis://127.0.0.1:…`).
    pub fn tcp_url(&self) -> String {
        match &self.auth {
            None => format!("redis://127.0.0.1:{}", self.port),
            Some((u, p)) => format!("redis://{u}:{p}@127.0.0.1:{}", self.port),
        }
    }

    /// Its directory (append-only files, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills it with SIGKILL (nothing is flushed but what is already on
    /// disk).
    pub fn kill(&mut self) {
        self.keeper.kill(self.pid);
    }

    /// Starts it again on the same port, socket and directory (an
    /// append-only file is read back).
    ///
    /// # Errors
    ///
    /// As [`start`](LocalRedis::start).
    pub fn restart(&mut self) -> Result<()> {
        self.launch()
    }

    /// Starts this program as a worker node of `queue` with `concurrency`
    /// worker processes (0: as many as the node chooses by itself, see
    /// [`ENV_CONCURRENCY`](crate::ENV_CONCURRENCY)), and `env` added to its
    /// environment (last: a `CREW_CONCURRENCY` in `env` wins over
    /// `concurrency`); it dies with this `LocalRedis` at the latest. A node
    /// that cannot start (a mistyped `CREW_*` count, Redis unreachable)
    /// exits with 2 after a line on its stderr, which is this program's.
    ///
    /// # Errors
    ///
    /// `is_io` if the program cannot be started.
    pub fn spawn_node(
        &self,
        queue: &str,
        concurrency: usize,
        env: &[(&str, &str)],
    ) -> Result<NodeProcess> {
        self.spawn_node_of(Path::new("/proc/self/exe"), queue, concurrency, env)
    }

    /// [`spawn_node`](LocalRedis::spawn_node) with another program (a
    /// binary that uses crew): it serves the tasks of its own build, and
    /// those it registers by name.
    ///
    /// # Errors
    ///
    /// `is_io` if the program cannot be started.
    pub fn spawn_node_of(
        &self,
        program: &Path,
        queue: &str,
        concurrency: usize,
        env: &[(&str, &str)],
    ) -> Result<NodeProcess> {
        let mut cmd = Command::new(program);
        cmd.env(crate::ENV_WORKER, self.url())
            .env(crate::ENV_QUEUE, queue)
            .env_remove("CREW_WORKER_FD")
            .stdin(Stdio::null());
        if concurrency == 0 {
            cmd.env_remove(crate::ENV_CONCURRENCY);
        } else {
            cmd.env(crate::ENV_CONCURRENCY, concurrency.to_string());
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let pid = self.keeper.spawn(cmd)?;
        Ok(NodeProcess { pid })
    }

    /// Runs `work` while nodes of `queue` come and go: starts `nodes` nodes
    /// (`concurrency` worker processes each, `env` added), and every
    /// `every` kills one at random (SIGKILL) and starts a new one in its
    /// place, until `work` returns; then stops the nodes left. Returns what
    /// `work` returned and the number of nodes killed. A simulation of
    /// churn on one machine (`crew bench cluster --churn`).
    ///
    /// # Errors
    ///
    /// `is_io` if a node cannot be started.
    pub fn churn<T>(
        &self,
        queue: &str,
        nodes: usize,
        concurrency: usize,
        env: &[(&str, &str)],
        every: Duration,
        work: impl FnOnce() -> T,
    ) -> Result<(T, usize)> {
        let live: std::sync::Mutex<Vec<NodeProcess>> = std::sync::Mutex::new(
            (0..nodes.max(1))
                .map(|_| self.spawn_node(queue, concurrency, env))
                .collect::<Result<_>>()?,
        );
        let done = std::sync::atomic::AtomicBool::new(false);
        let (out, kills) = std::thread::scope(|scope| {
            let killer = scope.spawn(|| {
                let mut kills = 0;
                // xorshift, seeded by the clock: which node dies next.
                let mut x = crate::proto::clock_shift() as u64 | 1;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(every);
                    if done.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let victim = {
                        let mut l = live.lock().unwrap_or_else(|p| p.into_inner());
                        if l.is_empty() {
                            None
                        } else {
                            let i = (x % l.len() as u64) as usize;
                            Some(l.swap_remove(i))
                        }
                    };
                    if let Some(v) = victim {
                        self.kill_node(v);
                        kills += 1;
                    }
                    if let Ok(n) = self.spawn_node(queue, concurrency, env) {
                        live.lock().unwrap_or_else(|p| p.into_inner()).push(n);
                    }
                }
                kills
            });
            let out = work();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            (out, killer.join().unwrap_or(0))
        });
        for n in live.into_inner().unwrap_or_else(|p| p.into_inner()) {
            self.kill_node(n);
        }
        Ok((out, kills))
    }

    /// Kills a node it started (SIGKILL) and reaps it.
    pub fn kill_node(&self, node: NodeProcess) {
        self.keeper.kill(node.pid);
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        self.keeper.orders.send(Order::Stop).ok();
        if let Some(t) = self.keeper.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
