use std::process::ExitCode;

use clap::Parser as _;
use pmtu_user::{
    cli::{Cli, Command},
    clamp, demo, trace,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("pmtu: error: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Trace(args) => trace::run(args.into()).await,
            Command::Clamp(args) => clamp::run(args.into()).await,
            Command::Demo(args) => demo::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pmtu: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
