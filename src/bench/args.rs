//! The command line (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Load generator for the chat relay: one scenario per subcommand; prints a
/// human summary, then one JSON line with the figures.
#[derive(Debug, Parser)]
#[command(name = "chat_bench", version)]
pub struct Bench {
    /// Server address.
    #[arg(long, global = true, default_value = "ws://127.0.0.1:12399")]
    pub url: String,
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The scenarios.
#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Registrations per second and their latency.
    Register(RegisterArgs),
    /// K sender->receiver pairs streaming E2E_MSG: throughput, latency, loss.
    Route(RouteArgs),
    /// N users logged in at once: login rate, presence convergence, server RSS.
    Hold(HoldArgs),
    /// One sender filling an offline recipient's mailbox, then its fetch.
    Offline(OfflineArgs),
    /// A classroom: logins trickling in, typing, chat, drops and returns.
    Mixed(MixedArgs),
}

/// `register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// How many users to register.
    #[arg(long, default_value_t = 200)]
    pub users: usize,
    /// Registrations in flight at once (client threads).
    #[arg(long, default_value_t = 8)]
    pub threads: usize,
}

/// `route`.
#[derive(Debug, Args)]
pub struct RouteArgs {
    /// Sender->receiver pairs (two connections each).
    #[arg(long, default_value_t = 1)]
    pub pairs: usize,
    /// Messages each sender sends.
    #[arg(long, default_value_t = 10_000)]
    pub msgs: u64,
    /// Bytes of padding in each payload.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Messages in flight per pair at most (sent, not yet received).
    #[arg(long, default_value_t = 1)]
    pub window: u64,
    /// Server process to read CPU time, RSS and threads from.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Answer renewals like the mobile client (no `"immediate"`: the server
    /// holds output for its renewal hold).
    #[arg(long)]
    pub mobile_like: bool,
    /// Draw the delivery latency histogram into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// `hold`.
#[derive(Debug, Args)]
pub struct HoldArgs {
    /// Users logged in at once.
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Login worker threads.
    #[arg(long, default_value_t = 64)]
    pub threads: usize,
    /// Registration worker threads (the users are registered first).
    #[arg(long, default_value_t = 8)]
    pub register_threads: usize,
    /// Observer clients (logged in first, they watch presence).
    #[arg(long, default_value_t = 2)]
    pub observers: usize,
    /// How long to wait for the observers to see everyone online, seconds.
    #[arg(long, default_value_t = 120)]
    pub converge_timeout: u64,
    /// Server process to read RSS and threads from.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Draw the users logged in over time into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Do not read the held clients' sockets (lists pile up in the server).
    #[arg(long = "no-drain", action = clap::ArgAction::SetFalse)]
    pub drain: bool,
}

/// `offline`.
#[derive(Debug, Args)]
pub struct OfflineArgs {
    /// Messages stored for the offline recipient.
    #[arg(long, default_value_t = 2000)]
    pub msgs: u64,
    /// Bytes of padding in each payload.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
}

/// `mixed`.
#[derive(Debug, Args)]
pub struct MixedArgs {
    /// Users in the class (one client thread each).
    #[arg(long, default_value_t = 300)]
    pub users: usize,
    /// Seconds over which the users log in, one after another.
    #[arg(long, default_value_t = 10.0)]
    pub ramp_secs: f64,
    /// Seconds of chat after the ramp.
    #[arg(long, default_value_t = 30.0)]
    pub secs: f64,
    /// Messages per second each user sends (on average, random gaps).
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// Users that drop their connection once and come back.
    #[arg(long, default_value_t = 30)]
    pub drops: usize,
    /// Bytes of padding in each payload.
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// Registration worker threads (the users are registered first).
    #[arg(long, default_value_t = 8)]
    pub register_threads: usize,
    /// Server process to read CPU time, RSS and threads from.
    #[arg(long)]
    pub server_pid: Option<u32>,
}
