//! The load generator `chat_bench` (binary `src/bin/chat_bench.rs`): plain OS
//! threads driving the crate's blocking [`crate::client`], one scenario per
//! subcommand, each printing a short human summary and one JSON line.
//!
//! - [`args`]: the command line;
//! - [`stats`]: percentiles, `/proc/<pid>` figures, user set-up helpers;
//! - [`plot`]: the `--plot FILE.svg` pictures of `route` and `hold`;
//! - [`register`], [`route`], [`hold`], [`offline`], [`mixed`]: the scenarios.

pub mod args;
pub mod hold;
pub mod mixed;
pub mod offline;
pub mod plot;
pub mod register;
pub mod route;
pub mod stats;

use std::process::ExitCode;

use clap::Parser;

use args::{Bench, Scenario};

/// Runs the bench with the process's arguments.
pub fn main() -> ExitCode {
    let bench = Bench::parse();
    stats::raise_descriptor_limit();
    let result = match bench.scenario {
        Scenario::Register(a) => register::run(&bench.url, &a),
        Scenario::Route(a) => route::run(&bench.url, &a),
        Scenario::Hold(a) => hold::run(&bench.url, &a),
        Scenario::Offline(a) => offline::run(&bench.url, &a),
        Scenario::Mixed(a) => mixed::run(&bench.url, &a),
    };
    match result {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("chat_bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
