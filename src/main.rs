//! The `chat_server` binary: settings, logging, then the server until killed.
//! Errors end here as one clear line on stderr and a non-zero exit.

use std::process::ExitCode;

use chat_server::config::Config;
use chat_server::server::ServerHandle;
use simplelog::{ColorChoice, ConfigBuilder, TermLogger, TerminalMode};

fn main() -> ExitCode {
    let config = match Config::load() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("chat_server: {error}");
            return ExitCode::from(2);
        }
    };
    let log_config = ConfigBuilder::new()
        .set_target_level(log::LevelFilter::Off)
        .set_thread_level(log::LevelFilter::Off)
        .build();
    let _ = TermLogger::init(
        config.log_level,
        log_config,
        TerminalMode::Stderr,
        ColorChoice::Auto,
    );
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("{error:#}");
            eprintln!("chat_server: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    let server = ServerHandle::start(config)?;
    server.wait();
    Ok(())
}
