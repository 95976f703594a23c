//! The `chat_server` binary: settings, logging, then the server until
//! SIGINT or SIGTERM, which shut it down gracefully (undelivered messages go
//! to the offline store, clients see close code 1001) and exit 0.
//! With an admin subcommand (`users ...`, `offline ...`, see
//! [`chat_server::admin`]) it runs that on the configured store instead and
//! exits. Errors end here as one clear line on stderr and a non-zero exit.

use std::process::ExitCode;

use chat_server::admin::{self, AdminCommand};
use chat_server::config::Config;
use chat_server::server::{open_store, ServerHandle};
use simplelog::{ColorChoice, ConfigBuilder, TermLogger, TerminalMode};

fn main() -> ExitCode {
    return_large_buffers_to_the_system();
    // Before any thread exists, so every thread inherits the blocked mask and
    // the signals wait for `sigwait` below instead of killing the process.
    let signals = match block_shutdown_signals() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("chat_server: cannot block SIGINT/SIGTERM: {error}");
            return ExitCode::from(1);
        }
    };
    let (config, command) = match Config::load_with_command() {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("chat_server: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some(command) = command {
        return run_admin(&config, &command);
    }
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
    match run(config, &signals) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("{error:#}");
            eprintln!("chat_server: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// Makes glibc serve every allocation of 64 KiB or more with its own
/// `mmap`, given back to the system when freed. By default the threshold
/// rises to the largest block ever freed, so the big transient buffers of
/// a user-list broadcast (one sealed copy per connection thread, hundreds
/// of KiB each with thousands of users) stay in the per-thread arenas for
/// good: measured with 1,000 held connections, 244 MiB RSS by default,
/// 84 MiB with this (BENCHMARKS.md).
fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator settings; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
    }
}

fn run(config: Config, signals: &libc::sigset_t) -> anyhow::Result<()> {
    let server = ServerHandle::start(config)?;
    let signal = wait_for_signal(signals)?;
    log::info!("signal {signal} received: shutting down");
    server.shutdown();
    log::info!("shutdown complete");
    Ok(())
}

/// Runs an admin command; only warnings are logged, the output is the answer.
fn run_admin(config: &Config, command: &AdminCommand) -> ExitCode {
    let _ = TermLogger::init(
        config.log_level.min(log::LevelFilter::Warn),
        ConfigBuilder::new().build(),
        TerminalMode::Stderr,
        ColorChoice::Never,
    );
    let result = open_store(&config.store)
        .map_err(admin::AdminError::from)
        .and_then(|store| admin::run(command, store.as_ref(), &mut std::io::stdout().lock()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("chat_server: {error}");
            ExitCode::from(1)
        }
    }
}

/// Blocks SIGINT and SIGTERM in the calling thread; returns the set.
fn block_shutdown_signals() -> std::io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use,
    // and pthread_sigmask only reads the set we pass.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let status = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if status != 0 {
            return Err(std::io::Error::from_raw_os_error(status));
        }
        Ok(set)
    }
}

/// Waits for one of the blocked signals; returns its number.
fn wait_for_signal(set: &libc::sigset_t) -> std::io::Result<libc::c_int> {
    let mut signal: libc::c_int = 0;
    // SAFETY: `set` is an initialised signal set and `signal` a valid out
    // pointer.
    let status = unsafe { libc::sigwait(set, &mut signal) };
    if status != 0 {
        return Err(std::io::Error::from_raw_os_error(status));
    }
    Ok(signal)
}
