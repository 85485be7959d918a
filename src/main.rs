//! The `passerelle` command: run, check, keygen.

use base64::Engine;
use clap::{Parser, Subcommand};
use passerelle::config;
use std::path::PathBuf;
use std::process::ExitCode;

/// glibc's allocator showed up as the largest user-space cost under load (malloc_consolidate, arena
/// locks); mimalloc's thread-local free lists suit pingora's many short-lived buffers.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "passerelle",
    version,
    about = "Authenticating reverse proxy (OpenID Connect: ProConnect, NC Connect, any provider)"
)]
struct Cli {
    /// Configuration file (same as `passerelle run --config FILE`).
    #[arg(long, global = false)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate the configuration and exit (non-zero on error).
    Check {
        #[arg(long, short)]
        config: PathBuf,
        /// Also fetch each provider's discovery document and check its issuer, and resolve every upstream.
        #[arg(long)]
        online: bool,
    },
    /// Print a fresh session key (32 random bytes, base64).
    Keygen,
}

fn main() -> ExitCode {
    // pingora-rustls uses ring; install it as the process default before anything creates a TLS config.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match (cli.command, cli.config) {
        (Some(Command::Keygen), _) => {
            let mut key = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
            println!("{}", base64::engine::general_purpose::STANDARD.encode(key));
            ExitCode::SUCCESS
        }
        (Some(Command::Check { config, online }), _) => check(&config, online),
        (Some(Command::Run { config }), _) | (None, Some(config)) => run(&config),
        (None, None) => {
            eprintln!("usage: passerelle run --config FILE   (or: passerelle check --config FILE, passerelle keygen)");
            ExitCode::from(2)
        }
    }
}

fn load(path: &std::path::Path) -> Result<config::Config, ExitCode> {
    config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(1)
    })
}

fn check(path: &std::path::Path, online: bool) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if online {
        passerelle::logging::init(config.server.log_format);
        if let Err(e) = passerelle::upstream::resolve_all(&config.routes) {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::from(1);
        }
        if let Err(e) = passerelle::server::preflight(&config) {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    }
    let providers: Vec<String> = config
        .providers
        .iter()
        .map(|p| format!("{} ({}, {})", p.name, p.kind.label(), p.issuer))
        .collect();
    println!(
        "{}: OK — {} route(s), provider(s): {}",
        path.display(),
        config.routes.len(),
        providers.join(", ")
    );
    ExitCode::SUCCESS
}

fn run(path: &std::path::Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    passerelle::logging::init(config.server.log_format);
    if let Err(e) = passerelle::server::preflight(&config) {
        tracing::error!("{e}");
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    let listen: Vec<String> = config.server.listen.iter().map(|a| a.to_string()).collect();
    let server = match passerelle::server::build(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(listen = ?listen, "Passerelle starting");
    server.run_forever()
}
