//! Helpers of the `chat_client` tests: temp config directories removed on
//! drop, the binary as a child process (with a time limit), and presence
//! waits through a library client.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chat_server::client::Client;

/// How long one `chat_client` run may take.
pub const RUN_LIMIT: Duration = Duration::from_secs(30);

/// A temp directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "chat_client_test_{tag}_{}_{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `chat_client --url URL --config-dir DIR ARGS...`, with no settings from
/// the environment of the test run.
pub fn cli(url: &str, dir: &TempDir, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat_client"));
    command
        .env_remove("CHAT_CLIENT_URL")
        .env_remove("CHAT_CLIENT_DIR")
        .arg("--url")
        .arg(url)
        .arg("--config-dir")
        .arg(dir.path())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// A running `chat_client`, killed on drop.
pub struct Running(pub Option<Child>);

impl Running {
    /// Starts `command` and writes `input` to its stdin (then closes it).
    pub fn start(mut command: Command, input: &str) -> Running {
        let mut child = command.spawn().expect("chat_client starts");
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(input.as_bytes());
        }
        Running(Some(child))
    }

    /// Waits for the exit (killing it after `RUN_LIMIT`) and collects output.
    pub fn finish(mut self) -> Output {
        let mut child = self.0.take().expect("running");
        let deadline = Instant::now() + RUN_LIMIT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().expect("wait");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        if let Some(mut out) = child.stdout.take() {
            let _ = out.read_to_end(&mut stdout);
        }
        if let Some(mut err) = child.stderr.take() {
            let _ = err.read_to_end(&mut stderr);
        }
        Output {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `command` to the end with `input` on stdin.
pub fn run(command: Command, input: &str) -> Output {
    Running::start(command, input).finish()
}

/// The output as text, for assertions.
pub fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Asserts the exit code and returns stdout.
pub fn expect_code(output: &Output, code: i32) -> String {
    let (stdout, stderr) = text(output);
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    stdout
}

/// The password every test user gets.
pub fn password(name: &str) -> String {
    format!("password of {name}\n")
}

/// `chat_client register NAME --password-stdin`, which must succeed.
pub fn register(url: &str, dir: &TempDir, name: &str) {
    let out = run(
        cli(url, dir, &["register", name, "--password-stdin"]),
        &password(name),
    );
    expect_code(&out, 0);
}

/// Waits until `observer` has seen `name` with presence `online` for a
/// stable 300 ms (longer than the server's broadcast window).
pub fn wait_presence(observer: &mut Client, name: &str, online: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut since: Option<Instant> = None;
    loop {
        let _ = observer.drain_events(Duration::from_millis(20));
        if observer.is_online(name) == Some(online) {
            let start = *since.get_or_insert_with(Instant::now);
            if start.elapsed() >= Duration::from_millis(300) {
                return;
            }
        } else {
            since = None;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never became online={online}"
        );
    }
}

/// Polls `condition` for up to 10 s.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
