//! The command line (clap derive).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

const AFTER_HELP: &str = "\
Without a command, chats interactively as --user (default: the last user who
logged in on this machine).

Identity keys and peer session keys are kept per user and server in
$XDG_CONFIG_HOME/chat_client (or ~/.config/chat_client), files mode 0600.

Exit codes: 0 ok, 1 could not be done (no such user, no secure session with an
offline peer, ...), 2 usage, 3 login or registration refused, 4 network or
server error, 5 recv timed out before --count messages.";

/// Terminal client for the end-to-end encrypted chat relay.
#[derive(Debug, Parser)]
#[command(name = "chat_client", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Server address.
    #[arg(
        long,
        global = true,
        env = "CHAT_CLIENT_URL",
        default_value = "ws://127.0.0.1:12345"
    )]
    pub url: String,
    /// PEM certificate(s) to trust for a wss:// server (e.g. its self-signed certificate).
    #[arg(long, global = true, env = "CHAT_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Where identity and session keys are kept.
    #[arg(long, global = true, env = "CHAT_CLIENT_DIR", value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// The local identity to use (default: the last user who logged in).
    #[arg(long, global = true, value_name = "NAME")]
    pub user: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an account (asks the password without echo).
    Register {
        name: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Log in (password the first time on this machine, then the saved key)
    /// and chat; with --password-stdin, only log in.
    Login {
        name: String,
        /// Read the password from the first line of stdin, log in, exit.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Chat interactively (the default).
    Chat,
    /// Send one end-to-end encrypted message and exit.
    Send {
        /// Recipient.
        #[arg(long, value_name = "NAME")]
        to: String,
        /// The message (the words are joined with spaces).
        #[arg(required = true, value_name = "TEXT")]
        text: Vec<String>,
    },
    /// Print incoming messages (offline ones first) and exit.
    Recv {
        /// Stop after this many messages.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<f64>,
        /// One JSON object per message: {"from","text","time"}.
        #[arg(long)]
        json: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["chat_client", "send", "--to", "bob", "hi", "there"])
            .expect("parses");
        assert!(matches!(cli.command, Some(Command::Send { ref text, .. }) if text.len() == 2));
        assert!(Cli::try_parse_from(["chat_client", "send", "--to", "bob"]).is_err());
    }
}
