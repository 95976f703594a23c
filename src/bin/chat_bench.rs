//! The `chat_bench` binary: a load generator for the chat relay (plain OS
//! threads, the crate's blocking client). Everything lives in
//! [`chat_server::bench`]; see `BENCHMARKS.md` for recorded runs.

use std::process::ExitCode;

fn main() -> ExitCode {
    chat_server::bench::main()
}
