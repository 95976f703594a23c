//! Reading a password: from the first line of stdin (`--password-stdin`) or
//! from the terminal without echo.

use std::io::{BufRead, Write};

use super::exit::{CliResult, Failure};
use super::term::{self, TermMode};

/// Where the password comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordSource {
    /// The first line of stdin.
    Stdin,
    /// Asked on the terminal without echo.
    Prompt,
}

/// Reads a password; `confirm` asks twice on a terminal.
pub fn read_password(source: PasswordSource, confirm: bool) -> CliResult<String> {
    let password = match source {
        PasswordSource::Stdin => read_line()?,
        PasswordSource::Prompt => {
            let first = ask("Password: ")?;
            if confirm && ask("Repeat password: ")? != first {
                return Err(Failure::usage("the passwords differ"));
            }
            first
        }
    };
    if password.is_empty() {
        return Err(Failure::usage("the password is empty"));
    }
    Ok(password)
}

fn read_line() -> CliResult<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::usage(format!("cannot read the password: {e}")))?;
    let end = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(end);
    Ok(line)
}

fn ask(prompt: &str) -> CliResult<String> {
    if !term::is_tty(term::STDIN) {
        return Err(Failure::usage(
            "stdin is not a terminal: pass the password with --password-stdin",
        ));
    }
    // Echo goes off before the prompt shows, so nothing typed at once echoes.
    let mode = TermMode::no_echo(term::STDIN)
        .map_err(|e| Failure::usage(format!("cannot turn off echo: {e}")))?;
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let line = read_line();
    drop(mode);
    eprintln!();
    line
}
