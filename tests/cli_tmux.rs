//! The interactive mode of `chat_client` in a real terminal, driven through
//! tmux: log in, `/to` a partner, send a line, see a reply from a scripted
//! `chat_client send` arrive above the prompt while a partial line stays
//! intact, typing notices both ways, `/who`, `/quit` restoring the terminal;
//! and a password prompt that does not echo.

mod cli_support;
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use cli_support::{cli, expect_code, register, run, Running, TempDir};
use common::{user, Backend, TestServer, WAIT};

const TMUX: &str = "/usr/bin/tmux";

/// A tmux server of our own (`-L`), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(tag: &str, width: u16, height: u16, command: &str) -> Tmux {
        let tmux = Tmux {
            socket: format!("chat_client_test_{tag}_{}", std::process::id()),
        };
        let (w, h) = (width.to_string(), height.to_string());
        let args = [
            "new-session",
            "-d",
            "-s",
            "chat",
            "-x",
            &w,
            "-y",
            &h,
            command,
        ];
        assert!(tmux.cmd(&args).status.success(), "tmux starts");
        tmux
    }

    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new(TMUX)
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux runs")
    }

    fn pane(&self) -> String {
        let out = self.cmd(&["capture-pane", "-p", "-t", "chat"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn type_text(&self, text: &str) {
        self.cmd(&["send-keys", "-t", "chat", "-l", text]);
    }

    fn key(&self, key: &str) {
        self.cmd(&["send-keys", "-t", "chat", key]);
    }

    fn line(&self, text: &str) {
        self.type_text(text);
        self.key("Enter");
    }

    /// Waits until the pane satisfies `pred`; fails with the pane shown.
    fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pane = self.pane();
            if pred(&pane) {
                return pane;
            }
            assert!(
                Instant::now() < deadline,
                "pane never showed {what}:\n{pane}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for(&self, needle: &str) -> String {
        self.wait(needle, |p| p.contains(needle))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.cmd(&["kill-server"]);
    }
}

/// The last non-empty line of the pane (the prompt line).
fn prompt_line(pane: &str) -> &str {
    pane.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("")
}

#[test]
fn interactive_chat_in_a_terminal() {
    let server = TestServer::start(Backend::Sqlite).expect("server");
    let url = server.url.as_str();
    let (a, b) = (TempDir::new("tmux_alice"), TempDir::new("tmux_bob"));
    register(url, &a, "alice");
    register(url, &b, "bob");
    let (mut carol, _) = user(&server, "carol");
    let bob = Running::start(
        cli(url, &b, &["recv", "--count", "1", "--timeout", "30"]),
        "",
    );
    carol.wait_user_online("bob", WAIT).expect("bob listens");

    // After the client: its exit code and the terminal mode it left.
    let command = format!(
        "sh -c 'env -u CHAT_CLIENT_URL {} --url {url} --config-dir {}; \
         echo exit=$?; stty -a; exec sleep 60'",
        env!("CARGO_BIN_EXE_chat_client"),
        a.path().display()
    );
    let tmux = Tmux::start("chat", 120, 40, &command);
    tmux.wait_for("logged in as alice");
    tmux.wait_for("online   bob");
    tmux.line("/to bob");
    tmux.wait_for("talking to bob (online)");
    tmux.wait_for("secure session with bob ready");
    tmux.line("hello from tmux");
    tmux.wait_for("you -> bob: hello from tmux");
    let out = expect_code(&bob.finish(), 0);
    assert!(out.contains("alice: hello from tmux"), "{out}");

    // A reply arrives while alice is typing to carol: the partial line stays.
    tmux.line("/to carol");
    tmux.wait_for("talking to carol");
    tmux.type_text("abc");
    assert!(carol
        .wait_typing_from("alice", WAIT)
        .expect("typing notice"));
    expect_code(
        &run(
            cli(url, &b, &["send", "--to", "alice", "reply from bob"]),
            "",
        ),
        0,
    );
    let pane = tmux.wait_for("bob: reply from bob");
    assert!(
        prompt_line(&pane).ends_with("to carol> abc"),
        "prompt line garbled:\n{pane}"
    );
    let time = pane
        .lines()
        .find(|l| l.contains("bob: reply from bob"))
        .and_then(|l| l.strip_prefix('['))
        .map(|l| l[..5].to_string())
        .unwrap_or_default();
    assert!(
        time.as_bytes().get(2) == Some(&b':'),
        "no HH:MM in:\n{pane}"
    );
    for _ in 0..3 {
        tmux.key("BSpace");
    }
    assert!(!carol.wait_typing_from("alice", WAIT).expect("typing stops"));
    // Carol types back: the prompt says so.
    carol.typing("alice", true).expect("typing");
    tmux.wait(r#"the prompt "(carol typing...)""#, |p| {
        prompt_line(p).starts_with("(carol typing...) to carol>")
    });
    tmux.line("/who");
    tmux.wait("a second user list", |p| p.matches("(you)").count() == 2);
    assert!(tmux.pane().contains("online   carol  typing..."));

    tmux.line("/quit");
    let pane = tmux.wait_for("exit=0");
    assert!(
        pane.contains("icanon") && !pane.contains("-icanon") && !pane.contains("-isig"),
        "terminal mode not restored:\n{pane}"
    );
}

#[test]
fn password_prompt_does_not_echo() {
    let server = TestServer::start(Backend::Sqlite).expect("server");
    let dir = TempDir::new("tmux_zed");
    let command = format!(
        "sh -c 'env -u CHAT_CLIENT_URL {} --url {} --config-dir {} register zed; \\
         echo exit=$?; exec sleep 60'",
        env!("CARGO_BIN_EXE_chat_client"),
        server.url,
        dir.path().display()
    );
    let tmux = Tmux::start("password", 120, 40, &command);
    tmux.wait_for("Password:");
    tmux.line("s3cret-pw");
    tmux.wait_for("Repeat password:");
    tmux.line("s3cret-pw");
    let pane = tmux.wait_for("exit=0");
    assert!(pane.contains("Registered zed"), "{pane}");
    assert!(!pane.contains("s3cret"), "the password was echoed:\n{pane}");
    // The account works: the saved key logs in.
    let out = run(cli(&server.url, &dir, &["recv", "--timeout", "0.2"]), "");
    expect_code(&out, 0);
}
