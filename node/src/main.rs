//! `drchain`: the node binary.

#![forbid(unsafe_code)]

use clap::Parser;
use drchain_node::{cli, command};

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match command::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
