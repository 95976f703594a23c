//! Admin subcommands of the `chat_server` binary, run against the configured
//! store (the same settings as the server) instead of starting a server:
//!
//! - `users list`: name, whether a key is stored, offline messages waiting;
//! - `users delete NAME`: the user and the messages waiting for it;
//! - `users reset-key NAME`: clears the public key, so the next login must
//!   be a password login (which may store a new key);
//! - `offline stats`: messages waiting, per recipient, age of the oldest;
//! - `offline purge --older-than AGE`: deletes older messages.
//!
//! Output is plain text for people, or one JSON document with `--json`.
//! Failures are an [`AdminError`], which the binary prints as one line with
//! a non-zero exit. A running server is not told: a deleted user stays in its
//! user list until it restarts.

use std::io::{self, Write};
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use crate::config::parse_age;
use crate::store::{OfflineStats, Store, StoreError, UserSummary};

/// The subcommands; without one the binary runs the server.
#[derive(Debug, Clone, Subcommand)]
pub enum AdminCommand {
    /// Registered users: list, delete, reset a key.
    #[command(subcommand)]
    Users(UsersCommand),
    /// The offline message queue: statistics, purge by age.
    #[command(subcommand)]
    Offline(OfflineCommand),
}

/// `chat_server users ...`
#[derive(Debug, Clone, Subcommand)]
pub enum UsersCommand {
    /// Every user: name, whether a public key is stored, offline messages waiting.
    List(Output),
    /// Deletes a user and the offline messages waiting for it.
    Delete {
        /// The user (matched case-insensitively).
        name: String,
        #[command(flatten)]
        output: Output,
    },
    /// Clears a user's public key: the next login must use the password.
    ResetKey {
        /// The user (matched case-insensitively).
        name: String,
        #[command(flatten)]
        output: Output,
    },
}

/// `chat_server offline ...`
#[derive(Debug, Clone, Subcommand)]
pub enum OfflineCommand {
    /// Messages waiting: in total, per recipient, and the age of the oldest.
    Stats(Output),
    /// Deletes offline messages older than an age.
    Purge {
        /// Age such as 30d, 12h, 90m or 45s (a bare number is seconds).
        #[arg(long, value_parser = parse_age)]
        older_than: Duration,
        #[command(flatten)]
        output: Output,
    },
}

/// How results are printed.
#[derive(Debug, Clone, Copy, Args)]
pub struct Output {
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no user named {0:?}")]
    UnknownUser(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
}

/// Runs `command` on `store`, printing to `out`.
pub fn run(
    command: &AdminCommand,
    store: &dyn Store,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    match command {
        AdminCommand::Users(UsersCommand::List(output)) => list_users(store, *output, out),
        AdminCommand::Users(UsersCommand::Delete { name, output }) => {
            delete_user(store, name, *output, out)
        }
        AdminCommand::Users(UsersCommand::ResetKey { name, output }) => {
            reset_key(store, name, *output, out)
        }
        AdminCommand::Offline(OfflineCommand::Stats(output)) => offline_stats(store, *output, out),
        AdminCommand::Offline(OfflineCommand::Purge { older_than, output }) => {
            purge(store, *older_than, *output, out)
        }
    }
}

fn list_users(store: &dyn Store, output: Output, out: &mut dyn Write) -> Result<(), AdminError> {
    let users = store.list_users()?;
    if output.json {
        let rows: Vec<_> = users
            .iter()
            .map(|u| json!({"username": u.username, "has_key": u.has_key, "offline_waiting": u.offline_waiting}))
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(rows))?;
        return Ok(());
    }
    write_user_table(&users, out)?;
    Ok(())
}

fn write_user_table(users: &[UserSummary], out: &mut dyn Write) -> io::Result<()> {
    let width = users
        .iter()
        .map(|u| u.username.chars().count())
        .chain([4])
        .max()
        .unwrap_or(4);
    writeln!(out, "{:<width$}  KEY  OFFLINE", "USER")?;
    for user in users {
        let key = if user.has_key { "yes" } else { "no" };
        writeln!(
            out,
            "{:<width$}  {key:<3}  {}",
            user.username, user.offline_waiting
        )?;
    }
    let noun = if users.len() == 1 { "user" } else { "users" };
    writeln!(out, "{} {noun}", users.len())
}

fn delete_user(
    store: &dyn Store,
    name: &str,
    output: Output,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let deleted = store
        .delete_user(name)?
        .ok_or_else(|| AdminError::UnknownUser(name.to_owned()))?;
    if output.json {
        writeln!(
            out,
            "{}",
            json!({"deleted": deleted.username, "offline_deleted": deleted.offline_deleted})
        )?;
    } else {
        writeln!(
            out,
            "deleted user {} and {} offline {} waiting for it",
            deleted.username,
            deleted.offline_deleted,
            messages(deleted.offline_deleted)
        )?;
    }
    Ok(())
}

fn reset_key(
    store: &dyn Store,
    name: &str,
    output: Output,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let username = store
        .reset_public_key(name)?
        .ok_or_else(|| AdminError::UnknownUser(name.to_owned()))?;
    if output.json {
        writeln!(out, "{}", json!({"reset_key": username}))?;
    } else {
        writeln!(
            out,
            "cleared the public key of {username}: the next login must use the password"
        )?;
    }
    Ok(())
}

fn offline_stats(store: &dyn Store, output: Output, out: &mut dyn Write) -> Result<(), AdminError> {
    let stats = store.offline_stats()?;
    if output.json {
        let per: Vec<_> = stats
            .per_recipient
            .iter()
            .map(|(name, waiting)| json!({"recipient": name, "waiting": waiting}))
            .collect();
        writeln!(
            out,
            "{}",
            json!({"total": stats.total, "oldest_age_secs": stats.oldest_age_secs, "per_recipient": per})
        )?;
        return Ok(());
    }
    write_stats(&stats, out)?;
    Ok(())
}

fn write_stats(stats: &OfflineStats, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "offline messages waiting: {}", stats.total)?;
    if let Some(age) = stats.oldest_age_secs {
        writeln!(out, "oldest: {} old", format_age(age))?;
    }
    if stats.per_recipient.is_empty() {
        return Ok(());
    }
    let width = stats
        .per_recipient
        .iter()
        .map(|(name, _)| name.chars().count())
        .chain([9])
        .max()
        .unwrap_or(9);
    writeln!(out, "{:<width$}  WAITING", "RECIPIENT")?;
    for (name, waiting) in &stats.per_recipient {
        writeln!(out, "{name:<width$}  {waiting}")?;
    }
    Ok(())
}

fn purge(
    store: &dyn Store,
    older_than: Duration,
    output: Output,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let purged = store.purge_offline_older_than(older_than)?;
    if output.json {
        writeln!(
            out,
            "{}",
            json!({"purged": purged, "older_than_secs": older_than.as_secs()})
        )?;
    } else {
        writeln!(
            out,
            "purged {purged} offline {} older than {}",
            messages(purged),
            format_age(older_than.as_secs())
        )?;
    }
    Ok(())
}

fn messages(n: u64) -> &'static str {
    if n == 1 {
        "message"
    } else {
        "messages"
    }
}

/// `3d 4h`, `2h 5m`, `12m 3s`, `45s`: the two largest units.
pub fn format_age(secs: u64) -> String {
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let parts: Vec<String> = units
        .iter()
        .scan(secs, |rest, (name, size)| {
            let n = *rest / size;
            *rest %= size;
            Some((n, *name))
        })
        .skip_while(|(n, _)| *n == 0)
        .take(2)
        .filter(|(n, _)| *n > 0)
        .map(|(n, name)| format!("{n}{name}"))
        .collect();
    if parts.is_empty() {
        "0s".to_owned()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn run_text(store: &dyn Store, command: AdminCommand) -> Result<String, AdminError> {
        let mut out = Vec::new();
        run(&command, store, &mut out)?;
        Ok(String::from_utf8(out).expect("utf-8"))
    }

    #[test]
    fn ages_are_short_and_readable() {
        assert_eq!(format_age(0), "0s");
        assert_eq!(format_age(45), "45s");
        assert_eq!(format_age(3_600), "1h");
        assert_eq!(format_age(93_784), "1d 2h");
        assert_eq!(format_age(30 * 86_400), "30d");
        assert_eq!(format_age(125), "2m 5s");
    }

    #[test]
    fn text_output_lines_up() {
        let store = SqliteStore::open_in_memory().expect("store");
        store.create_user("Alice", "h", "a2V5").expect("user");
        store.create_user("bo", "h", "a2V5").expect("user");
        store.store_offline("bo", "alice", "{}").expect("offline");
        store.reset_public_key("bo").expect("reset");
        let text = run_text(
            &store,
            AdminCommand::Users(UsersCommand::List(Output { json: false })),
        )
        .expect("list");
        assert_eq!(
            text,
            "USER   KEY  OFFLINE\nAlice  yes  1\nbo     no   0\n2 users\n"
        );
        let missing = run_text(
            &store,
            AdminCommand::Users(UsersCommand::Delete {
                name: "carol".into(),
                output: Output { json: false },
            }),
        );
        assert_eq!(
            missing.err().map(|e| e.to_string()).as_deref(),
            Some("no user named \"carol\"")
        );
    }
}
