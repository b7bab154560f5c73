//! Re-executing the test binary as a child in a role, and passing handles to
//! it as hex-encoded postcard in an environment variable.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

const ROLE: &str = "CREW_SHM_TEST_ROLE";
const ARG: &str = "CREW_SHM_TEST_ARG";

/// Generous bound for anything a test waits on: a hang fails, never blocks.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

/// The role this process was started in, if it is a child.
pub(crate) fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// The argument the parent passed to this child.
pub(crate) fn arg<T: DeserializeOwned>() -> T {
    let hex = std::env::var(ARG).expect("child started without an argument");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    postcard::from_bytes(&bytes).expect("argument decodes")
}

fn encode<T: Serialize>(value: &T) -> String {
    postcard::to_allocvec(value)
        .expect("argument encodes")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A child process running one test of this binary in a role; killed if
/// still running when dropped, so a failing test leaves no process behind.
pub(crate) struct Child {
    child: std::process::Child,
    output: Option<JoinHandle<String>>,
}

impl Child {
    /// Starts the test `test` (as `module_path!()::name`) in `role` with `arg`.
    pub(crate) fn spawn(test: &str, role: &str, arg: &impl Serialize) -> Child {
        // `module_path!()` starts with the crate name, libtest's names don't.
        let test = test.split_once("::").map_or(test, |(_, rest)| rest);
        let mut command = Command::new(std::env::current_exe().expect("test binary path"));
        command
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(ROLE, role)
            .env(ARG, encode(arg))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn child test process");
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let output = std::thread::spawn(move || {
            let err = std::thread::spawn(move || {
                let mut s = String::new();
                let _ = stderr.read_to_string(&mut s);
                s
            });
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s + &err.join().unwrap_or_default()
        });
        Child {
            child,
            output: Some(output),
        }
    }

    /// The child's process id.
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }

    /// Kills the child with SIGKILL (no cleanup runs in it).
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
    }

    /// Waits for the child to exit, at most [`PATIENCE`]; returns its status
    /// and everything it printed.
    pub(crate) fn wait(mut self) -> (ExitStatus, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if start.elapsed() > PATIENCE {
                self.kill();
                let output = self
                    .output
                    .take()
                    .map(|h| h.join().unwrap_or_default())
                    .unwrap_or_default();
                panic!("child did not exit within {PATIENCE:?}; its output:\n{output}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let output = self
            .output
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        (status, output)
    }

    /// Waits for the child and asserts that its test passed.
    pub(crate) fn assert_success(self) -> String {
        let (status, output) = self.wait();
        assert!(
            status.success(),
            "child failed with {status}; its output:\n{output}"
        );
        output
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.output.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Resident memory of this process in bytes (from /proc/self/statm).
pub(crate) fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .expect("statm field")
        .parse()
        .expect("number");
    pages * 4096
}
