//! The `chat_client` binary: a terminal client for the chat relay, end-to-end
//! encrypted, interoperating with the mobile client. Everything lives in
//! [`chat_server::cli`]; errors end as one line on stderr and an exit code.

use std::process::ExitCode;

fn main() -> ExitCode {
    chat_server::cli::main()
}
