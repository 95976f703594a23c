//! The terminal client `chat_client` (binary `src/bin/chat_client.rs`): a
//! person without the mobile app chats through the server from a terminal,
//! end-to-end encrypted, with the same protocol as the mobile client.
//!
//! - [`args`]: the command line;
//! - [`account`]: register and log in, keys saved per user and server
//!   ([`files`]), passwords read without echo ([`password`]);
//! - [`chat`]: the interactive mode ([`editor`], [`screen`], [`term`]);
//! - [`script`]: `send` and `recv` for scripts;
//! - [`exit`]: exit codes and one-line errors.

pub mod account;
pub mod args;
pub mod chat;
pub mod editor;
pub mod exit;
pub mod files;
pub mod password;
pub mod screen;
pub mod script;
pub mod term;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use account::Session;
use args::{Cli, Command};
use exit::{CliResult, Failure};
use files::Files;
use password::PasswordSource;

/// Runs the client with the process's arguments; returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("chat_client: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

/// The user named `name` in `users` (case-insensitive): its stored
/// spelling and whether it is online.
pub fn find_user(users: &[(String, bool)], name: &str) -> Option<(String, bool)> {
    let folded = name.to_lowercase();
    users
        .iter()
        .find(|(u, _)| u.to_lowercase() == folded)
        .cloned()
}

fn prompt_or(stdin: bool) -> PasswordSource {
    if stdin {
        PasswordSource::Stdin
    } else {
        PasswordSource::Prompt
    }
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> CliResult<()> {
    if let Some(ca_file) = &cli.ca_file {
        // Every connection of this process (reconnects included) reads the
        // trust anchors for wss:// from here; set before any thread starts.
        std::env::set_var(crate::client::connection::CA_FILE_ENV, ca_file);
    }
    let config = files::config_dir(cli.config_dir)?;
    let files = Files::open(&config, &cli.url)?;
    let url = cli.url.as_str();
    let user = cli.user.as_deref();
    match cli.command.unwrap_or(Command::Chat) {
        Command::Register {
            name,
            password_stdin,
        } => {
            account::register(&files, url, &name, prompt_or(password_stdin))?;
            println!("Registered {name}. Log in with: chat_client login {name}");
            Ok(())
        }
        Command::Login {
            name,
            password_stdin,
        } => {
            let session = account::login(&files, url, &name, Some(prompt_or(password_stdin)))?;
            if password_stdin {
                println!("Logged in as {name}.");
                session.close();
                return Ok(());
            }
            chat::run(session)
        }
        Command::Chat => {
            let session = account::login_saved(&files, url, user, Some(PasswordSource::Prompt))?;
            chat::run(session)
        }
        Command::Send { to, text } => {
            let session = account::login_saved(&files, url, user, None)?;
            with_session(session, |s| script::send(s, &to, &text.join(" ")))
        }
        Command::Recv {
            count,
            timeout,
            json,
        } => {
            let timeout = seconds(timeout)?;
            let session = account::login_saved(&files, url, user, None)?;
            with_session(session, |s| script::recv(s, count, timeout, json))
        }
    }
}

fn with_session(
    mut session: Session,
    f: impl FnOnce(&mut Session) -> CliResult<()>,
) -> CliResult<()> {
    let result = f(&mut session);
    session.close();
    result
}

fn seconds(value: Option<f64>) -> CliResult<Option<Duration>> {
    match value {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(Failure::usage(format!("bad --timeout {s}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_found_case_insensitively() {
        let users = vec![("Alice".to_string(), true), ("bob".to_string(), false)];
        assert_eq!(find_user(&users, "ALICE"), Some(("Alice".into(), true)));
        assert_eq!(find_user(&users, "carol"), None);
        assert!(seconds(Some(-1.0)).is_err());
        assert_eq!(
            seconds(Some(0.5)).unwrap(),
            Some(Duration::from_millis(500))
        );
    }
}
