use std::process::ExitCode;

use clap::Parser as _;
use pmtu_user::{
    cli::{Cli, Command},
    clamp,
    control::{self, NoDaemon, Request},
    daemon, demo, doctor, trace,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logging for the daemon (journald reads stderr); RUST_LOG=debug etc.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("pmtu: error: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<bool> = runtime.block_on(async {
        match cli.command {
            Command::Trace(args) => trace::run(args.into()).await.map(|()| true),
            Command::Clamp(args) => clamp::run(args.into()).await.map(|()| true),
            Command::Demo(args) => demo::run(args).await.map(|()| true),
            Command::Run(args) => daemon::run(args.config).await.map(|()| true),
            Command::CheckConfig(args) => daemon::check_config(&args.config).map(|()| true),
            Command::Status(a) => control::ask(&a.control, &Request::Status { json: a.json }).await,
            Command::Table(a) => {
                control::ask(&a.client.control, &Request::Table { json: a.client.json, kernel: a.kernel }).await
            }
            Command::Stats(a) => control::ask(&a.control, &Request::Stats { json: a.json }).await,
            Command::Events(a) => {
                control::ask(&a.client.control, &Request::Events { json: a.client.json, follow: a.follow }).await
            }
            Command::Reload(a) => control::ask(&a.control, &Request::Reload).await,
            Command::Learning(a) => {
                control::ask(&a.client.control, &Request::Learning { set: a.set, json: a.client.json }).await
            }
            Command::Doctor(args) => doctor::run(args).await.map(|()| true),
            Command::Detach(a) => daemon::detach(&a.pin_path, &a.control).await.map(|lines| {
                for line in lines {
                    println!("pmtu: {line}");
                }
                true
            }),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("pmtu: error: {err:#}");
            if err.downcast_ref::<NoDaemon>().is_some() {
                return ExitCode::from(control::NO_DAEMON);
            }
            ExitCode::FAILURE
        }
    }
}
