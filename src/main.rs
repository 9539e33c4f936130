//! The `gcal-syncd` command: parses arguments, sets up logging and the
//! runtime, dispatches, and maps errors to exit codes (0 success, 78
//! configuration error, 1 anything else).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use gcal_syncd::config::{self, Config};
use gcal_syncd::{daemon, logging};

/// sysexits.h EX_CONFIG.
const EXIT_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "gcal-syncd",
    version,
    about = "Turns Google Calendar push notifications into an exact per-event change feed",
    after_help = "The configuration file is --config, else $GCAL_SYNCD_CONFIG, else /etc/gcal-syncd/config.toml."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground (systemd starts it this way).
    #[command(after_help = "Example:\n  gcal-syncd run --config /etc/gcal-syncd/config.toml")]
    Run {
        /// Configuration file.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Validate the configuration; print every error and exit 78, or exit 0.
    #[command(
        name = "check-config",
        after_help = "Example:\n  gcal-syncd check-config --config config.example.toml"
    )]
    CheckConfig {
        /// Configuration file.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Show the running daemon's calendars, asked from its local API.
    #[command(after_help = "Example:\n  gcal-syncd status --config /etc/gcal-syncd/config.toml")]
    Status {
        /// Configuration file (to find the local API).
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Print the daemon's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show the sinks' state and lag, or enable a disabled sink again.
    #[command(
        after_help = "Examples:\n  gcal-syncd sinks\n  gcal-syncd sinks reset app --config /etc/gcal-syncd/config.toml"
    )]
    Sinks {
        /// Configuration file (to find the local API, or the store).
        #[arg(long, value_name = "PATH", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: Option<SinksAction>,
    },
    /// Run the built-in emulator and the daemon together and walk through a scripted set of changes.
    #[command(
        after_help = "Example:\n  cargo run --release -- demo\n  gcal-syncd demo --keep-running"
    )]
    Demo {
        /// Stay up after the script, for calling the API and editing the emulator by hand.
        #[arg(long)]
        keep_running: bool,
        /// Keep the demo's directory (config, store, emulator key) after exit.
        #[arg(long)]
        keep_dir: bool,
    },
    /// Run the Google Calendar emulator alone, for testing your own apps.
    #[command(after_help = gcal_syncd::emulator::control_api_help())]
    Emulator {
        /// Address to listen on (port 0: any free port).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Let watch channels use http:// addresses (Google demands https).
        #[arg(long)]
        allow_http: bool,
        /// Seed of every random decision (order, ids, faults).
        #[arg(long, default_value_t = 0x5eed)]
        seed: u64,
        /// Keep the directory holding the credentials file after exit.
        #[arg(long)]
        keep_dir: bool,
    },
}

#[derive(Subcommand)]
enum SinksAction {
    /// List the sinks (the default): state, cursor, lag, last error.
    List {
        /// Print the daemon's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Enable a sink disabled by 410 Gone or max_lag; it resumes from its
    /// cursor. Asks the running daemon, or changes the store when none runs.
    Reset {
        /// The sink's name.
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(config::resolve_path(config)),
        Command::CheckConfig { config } => check_config(config::resolve_path(config)),
        Command::Status { config, json } => status(config::resolve_path(config), json),
        Command::Sinks { config, action } => sinks(
            config::resolve_path(config),
            action.unwrap_or(SinksAction::List { json: false }),
        ),
        Command::Demo {
            keep_running,
            keep_dir,
        } => demo(keep_running, keep_dir),
        Command::Emulator {
            listen,
            allow_http,
            seed,
            keep_dir,
        } => emulator(listen, allow_http, seed, keep_dir),
    }
}

/// The async runtime, or the exit code after saying why there is none.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::from(1)
        })
}

fn demo(keep_running: bool, keep_dir: bool) -> ExitCode {
    match runtime() {
        Ok(rt) => ExitCode::from(rt.block_on(gcal_syncd::demo::run(keep_running, keep_dir))),
        Err(code) => code,
    }
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("{e}");
        }
        eprintln!("{}: {} error(s)", path.display(), errors.0.len());
        ExitCode::from(EXIT_CONFIG)
    })
}

/// Prints the daemon's answer as indented JSON (`--json`).
fn print_json(body: &impl serde::Serialize) -> ExitCode {
    println!("{}", serde_json::to_string_pretty(body).unwrap_or_default());
    ExitCode::SUCCESS
}

/// The configuration and a runtime, for a command that asks the daemon.
fn client(path: &Path) -> Result<(Config, tokio::runtime::Runtime), ExitCode> {
    Ok((load(path)?, runtime()?))
}

fn status(path: PathBuf, json: bool) -> ExitCode {
    let (cfg, runtime) = match client(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match runtime.block_on(gcal_syncd::api::fetch_calendars(
        cfg.api.listen,
        cfg.api.token.as_ref(),
    )) {
        Ok(body) if json => print_json(&body),
        Ok(body) => {
            print!("{}", gcal_syncd::status::table(&body, chrono::Utc::now()));
            let sinks = runtime.block_on(gcal_syncd::api::fetch_sinks(
                cfg.api.listen,
                cfg.api.token.as_ref(),
            ));
            if let Ok(sinks) = sinks {
                let table = gcal_syncd::status::sinks_table(&sinks);
                if !table.is_empty() {
                    print!("\n{table}");
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gcal-syncd status: {e}");
            ExitCode::from(1)
        }
    }
}

fn sinks(path: PathBuf, action: SinksAction) -> ExitCode {
    let (cfg, runtime) = match client(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (addr, token) = (cfg.api.listen, cfg.api.token.as_ref());
    match action {
        SinksAction::List { json } => {
            match runtime.block_on(gcal_syncd::api::fetch_sinks(addr, token)) {
                Ok(body) if json => print_json(&body),
                Ok(body) => {
                    print!("{}", gcal_syncd::status::sinks_table(&body));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("gcal-syncd sinks: {e}");
                    ExitCode::from(1)
                }
            }
        }
        SinksAction::Reset { name } => {
            if !cfg.sinks.iter().any(|s| s.name == name) {
                eprintln!(
                    "gcal-syncd sinks reset: no sink named {name:?} in {}",
                    path.display()
                );
                return ExitCode::from(1);
            }
            match runtime.block_on(gcal_syncd::api::reset_sink(addr, token, &name)) {
                Ok(done) => {
                    if done["restarted"] == true {
                        println!("sink {name}: enabled; delivering again from its cursor");
                    } else {
                        println!("sink {name}: was not disabled; nothing to do");
                    }
                    ExitCode::SUCCESS
                }
                // No daemon: the mark is cleared in the store, read at start.
                Err(gcal_syncd::api::CallError::Unreachable(_)) => {
                    match gcal_syncd::store::Store::open(&cfg.store.path)
                        .and_then(|store| store.enable_sink(&name))
                    {
                        Ok(true) => {
                            println!("sink {name}: enabled in the store; it delivers when gcal-syncd starts");
                            ExitCode::SUCCESS
                        }
                        Ok(false) => {
                            println!("sink {name}: was not disabled; nothing to do");
                            ExitCode::SUCCESS
                        }
                        Err(e) => {
                            eprintln!("gcal-syncd sinks reset: no daemon answers at {addr}, and the store cannot be changed: {e}");
                            ExitCode::from(1)
                        }
                    }
                }
                Err(e) => {
                    eprintln!("gcal-syncd sinks reset: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn check_config(path: PathBuf) -> ExitCode {
    match load(&path) {
        Ok(cfg) => {
            // Warnings before the verdict, on the same stream, so they are
            // read in that order however the output is captured.
            let warnings = cfg.warnings();
            for warning in &warnings {
                println!("warning: {warning}");
            }
            println!(
                "{}: OK ({} account(s), {} warning(s))",
                path.display(),
                cfg.accounts.len(),
                warnings.len()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn run(path: PathBuf) -> ExitCode {
    let cfg = match load(&path) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    let log = logging::init(&cfg.log_level);
    gcal_syncd::tls::ensure_provider();
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = runtime.block_on(async move {
        let listeners = daemon::Listeners::bind(&cfg).await?;
        let stop = CancellationToken::new();
        let (control_tx, control_rx) = mpsc::channel(4);
        let signals = tokio::spawn(daemon::forward_signals(stop.clone(), control_tx));
        let result = daemon::run(cfg, listeners, control_rx, stop, log).await;
        signals.abort();
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "gcal-syncd failed");
            ExitCode::from(1)
        }
    }
}

fn emulator(listen: std::net::SocketAddr, allow_http: bool, seed: u64, keep_dir: bool) -> ExitCode {
    let _log = logging::init("info");
    gcal_syncd::tls::ensure_provider();
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result: Result<(), String> = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let opts = gcal_syncd::emulator::Options {
            allow_http,
            seed,
            ..Default::default()
        };
        let emu = gcal_syncd::emulator::Emulator::start(listener, opts)
            .await
            .map_err(|e| e.to_string())?;
        // The credentials file holds the emulator's private key: a private
        // directory, removed on exit unless --keep-dir.
        let mut dir = gcal_syncd::private_dir::ScratchDir::new("emulator")
            .map_err(|e| format!("cannot create a directory under the temp dir: {e}"))?;
        if keep_dir {
            dir.keep();
        }
        let credentials = dir
            .write(
                "service-account.json",
                emu.service_account_json().as_bytes(),
            )
            .map_err(|e| format!("cannot write the credentials file: {e}"))?;
        println!("listening on {}", emu.url());
        println!("credentials: {}", credentials.display());
        println!("calendar: {}", gcal_syncd::emulator::SERVICE_ACCOUNT);
        println!(
            "api root: {}  token endpoint: {}  control: {}/emulator/v1 (see --help)",
            emu.api_root(),
            emu.token_uri(),
            emu.url()
        );
        let stop = CancellationToken::new();
        let (control_tx, _control_rx) = mpsc::channel(1);
        let signals = tokio::spawn(daemon::forward_signals(stop.clone(), control_tx));
        stop.cancelled().await;
        signals.abort();
        emu.shutdown().await;
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gcal-syncd emulator: {e}");
            ExitCode::from(1)
        }
    }
}
