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
    #[arg(long, global = false, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve. SIGHUP reloads the configuration file; SIGTERM stops gracefully, SIGINT at once.
    Run {
        /// The configuration file (TOML; `config.example.toml` is the demo's).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Take over the listening sockets of the running instance (binary upgrade): start this, then
        /// send SIGQUIT to the running one, which hands its sockets over and finishes its requests.
        #[arg(long)]
        upgrade: bool,
        /// Run in the background and write `server.pid_file` (for a service manager, `Type=forking`).
        #[arg(long)]
        daemon: bool,
        /// Overrides `server.pid_file`.
        #[arg(long, value_name = "PATH")]
        pid_file: Option<String>,
        /// Overrides `server.upgrade_socket`.
        #[arg(long, value_name = "PATH")]
        upgrade_socket: Option<String>,
    },
    /// Validate the configuration and exit (non-zero on error).
    Check {
        /// The configuration file to check (TOML).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Also try every hop `run` depends on: each provider's egress proxy, discovery document and keys
        /// (compared with the configuration), every upstream and Redis; fails naming the hop that does not
        /// answer. Prints the registration sheet of each provider.
        #[arg(long)]
        online: bool,
    },
    /// Print a fresh session key (32 random bytes, base64).
    Keygen {
        /// A P-256 private key (PKCS#8 PEM) for `[assertion] keys` instead: it signs the identity
        /// assertions of routes with `assertion`.
        #[arg(long)]
        assertion: bool,
    },
    /// Print the register of processing: for each route, the app it protects, its purpose, and every
    /// claim its app receives under which header name (Markdown, or JSON with --json).
    Register {
        /// The configuration file (TOML).
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// JSON instead of Markdown.
        #[arg(long)]
        json: bool,
    },
    /// List or revoke server-side sessions, through the admin listener's session API (needs
    /// `server.admin_listen`, `server.admin_token` and `[session.redis]`).
    Sessions {
        #[command(subcommand)]
        action: SessionsAction,
    },
}

#[derive(Subcommand)]
enum SessionsAction {
    /// The live sessions of a subject.
    List {
        /// The subject (`sub` claim) whose sessions to list.
        #[arg(long)]
        sub: String,
        /// Only this provider's sessions (default: every provider).
        #[arg(long)]
        provider: Option<String>,
        /// The configuration file: where the admin listener is, and its token.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// End sessions on every replica: every session of a subject, or one by id.
    Revoke {
        /// End every session of this subject (`sub` claim).
        #[arg(long, conflicts_with = "id", required_unless_present = "id")]
        sub: Option<String>,
        /// End this one session (its id, as the audit trail and `sessions list` show it).
        #[arg(long)]
        id: Option<String>,
        /// With --sub: only this provider's sessions (default: every provider).
        #[arg(long)]
        provider: Option<String>,
        /// The configuration file: where the admin listener is, and its token.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    // pingora-rustls uses ring; install it as the process default before anything creates a TLS config.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match (cli.command, cli.config) {
        (Some(Command::Keygen { assertion: true }), _) => {
            match passerelle::identity::assertion::generate_key_pem() {
                Ok(pem) => {
                    print!("{pem}");
                    eprintln!("Save it readable by Passerelle only (chmod 600), then: [assertion] keys = [\"file:/etc/passerelle/assertion.pem\"]");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        (Some(Command::Keygen { assertion: false }), _) => {
            let mut key = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
            println!("{}", base64::engine::general_purpose::STANDARD.encode(key));
            ExitCode::SUCCESS
        }
        (Some(Command::Check { config, online }), _) => check(&config, online),
        (Some(Command::Register { config, json }), _) => register(&config, json),
        (Some(Command::Sessions { action }), _) => sessions(action),
        (
            Some(Command::Run {
                config,
                upgrade,
                daemon,
                pid_file,
                upgrade_socket,
            }),
            _,
        ) => run(
            &config,
            passerelle::server::Start {
                upgrade,
                daemon,
                pid_file,
                upgrade_socket,
            },
        ),
        (None, Some(config)) => run(&config, passerelle::server::Start::default()),
        (None, None) => {
            eprintln!("usage: passerelle run --config FILE   (or: passerelle check --config FILE, passerelle register --config FILE, passerelle keygen)");
            ExitCode::from(2)
        }
    }
}

/// A runtime for the one-shot network calls of `check --online` and `sessions`.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(1)
        })
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
    let sheets = passerelle::registration::Sheet::all(&config);
    let mut failures = 0usize;
    let mut fail = |message: &dyn std::fmt::Display| {
        eprintln!("error: {}: {message}", path.display());
        failures += 1;
    };
    if online {
        passerelle::logging::init(config.server.log_format);
        let runtime = match runtime() {
            Ok(r) => r,
            Err(code) => return code,
        };
        for sheet in &sheets {
            let found = runtime.block_on(passerelle::online::check_provider(&config, sheet));
            for hop in &found.unreachable {
                fail(hop);
            }
            for mismatch in &found.mismatches {
                fail(mismatch);
            }
            for note in &found.notes {
                println!("note: {note}");
            }
            if found.unreachable.is_empty() && found.mismatches.is_empty() {
                let via = match &sheet.provider.egress_proxy {
                    Some(proxy) => {
                        format!(" through egress proxy {}", config::printable_url(proxy))
                    }
                    None => String::new(),
                };
                println!(
                    "provider `{}`: discovery and keys reached{via}; they agree with the configuration",
                    sheet.provider.name
                );
            }
        }
        for hop in runtime.block_on(passerelle::online::check_upstreams(&config)) {
            fail(&hop);
        }
        if let Some(redis) = &config.session.redis {
            match describe_redis(redis, &config.session) {
                Ok(found) => println!("session store: {found}"),
                Err(e) => fail(&format!("session.redis: {e}")),
            }
        }
    }
    for sheet in &sheets {
        print!("{}", sheet.render());
    }
    let origin = config
        .server
        .public_url
        .as_ref()
        .map(|u| u.origin())
        .unwrap_or_else(|| "https://<public host>".into());
    println!(
        "back-channel logout URL to register at providers that send it (Keycloak / NC Connect v3): {origin}{}/backchannel-logout",
        config.server.prefix
    );
    if config.session.redis.is_none() {
        println!("sessions: in cookies only; logout ends the browser's copy (set [session.redis] to revoke on every replica)");
    }
    if failures > 0 {
        eprintln!(
            "{}: {failures} problem(s) found: not ready to serve",
            path.display()
        );
        return ExitCode::from(1);
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

fn register(path: &std::path::Path, json: bool) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let register = passerelle::register::Register::new(&config, &path.display().to_string());
    match json {
        true => println!("{}", register.to_json()),
        false => print!("{}", register.to_markdown()),
    }
    ExitCode::SUCCESS
}

/// Connects to Redis as `run` would, and says what answered.
fn describe_redis(
    redis: &config::RedisConfig,
    session: &config::SessionConfig,
) -> Result<String, String> {
    let shared =
        passerelle::session::Shared::new(redis, session.clone()).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime
        .block_on(shared.describe())
        .map_err(|e| e.to_string())
}

/// Calls the admin listener's session API and prints its JSON answer.
fn sessions(action: SessionsAction) -> ExitCode {
    let (path, method, route, mut params) = match action {
        SessionsAction::List {
            sub,
            provider,
            config,
        } => (
            config,
            "GET",
            "/sessions",
            vec![("sub", sub), ("provider", provider.unwrap_or_default())],
        ),
        SessionsAction::Revoke {
            sub,
            id,
            provider,
            config,
        } => (
            config,
            "POST",
            "/sessions/revoke",
            vec![
                ("sub", sub.unwrap_or_default()),
                ("id", id.unwrap_or_default()),
                ("provider", provider.unwrap_or_default()),
            ],
        ),
    };
    params.retain(|(_, v)| !v.is_empty());
    let config = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (Some(admin), Some(token)) = (config.server.admin_listen, &config.server.admin_token)
    else {
        eprintln!(
            "error: {}: the session API needs server.admin_listen and server.admin_token",
            path.display()
        );
        return ExitCode::from(1);
    };
    let host = match admin.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            std::net::SocketAddr::from(([127, 0, 0, 1], admin.port()))
        }
        ip if ip.is_unspecified() => {
            std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, admin.port()))
        }
        _ => admin,
    };
    if !host.ip().is_loopback() {
        eprintln!("warning: {host} is not a loopback address: the admin token travels unencrypted; run this command on the machine (or in the pod) where Passerelle runs");
    }
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let url = format!("http://{host}{route}?{query}");
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let answer = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .no_proxy()
            .build()?;
        let request = match method {
            "POST" => client.post(&url),
            _ => client.get(&url),
        };
        let response = request.bearer_auth(token.expose()).send().await?;
        let status = response.status();
        Ok::<_, reqwest::Error>((status, response.text().await?))
    });
    match answer {
        Ok((status, body)) => {
            println!("{body}");
            if status.is_success() {
                ExitCode::SUCCESS
            } else {
                eprintln!("error: the admin listener answered {status}");
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: cannot reach the admin listener at {host}: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(path: &std::path::Path, start: passerelle::server::Start) -> ExitCode {
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
    let server = match passerelle::server::build(
        config,
        // A daemon runs from `/`: a relative path would not reload.
        Some(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())),
        start,
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(listen = ?listen, "Passerelle starting");
    server.run_forever()
}
