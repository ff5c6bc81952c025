//! `carrierctl`, the operator CLI of Carrier.
//!
//! - `logs get|search|retry` and `destinations queue|pause|resume|skip` call ingress's REST API
//!   (`--url`/`CARRIER_URL`, `--token`/`CARRIER_TOKEN`).
//! - `send` posts messages as a source (its client credentials, or its access token).
//! - `notifications tail` reads the alerts topic from Kafka (`--brokers`/`CARRIER_KAFKA__BROKERS`).
//! - `admin migrate|schema|topics ensure|topics check` install and upgrade: the database
//!   schema and the topics, configured like the services (`CARRIER_*`, `CARRIER_CONFIG_FILE`).
//!
//! Output is for people by default (tables, aligned fields) and for scripts with `--json`
//! (one JSON document per command; JSON lines for `tail`). Failures exit non-zero with Carrier's
//! own error text on stderr (see `api::CtlError::exit_code`).
#![forbid(unsafe_code)]

mod admin;
mod api;
mod cli;
mod destinations;
mod logs;
mod notifications;
mod output;
mod send;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::api::{Client, CtlError};
use crate::cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("carrierctl: {error}");
            error.exit_code()
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, CtlError> {
    let as_json = cli.json;
    let timeout = Duration::from_millis(cli.timeout_ms.max(1));
    let (url, token) = (cli.url, cli.token);
    let client = move || Client::new(&url, token, timeout);
    match cli.command {
        Command::Logs { command } => logs::run(&client()?, command, as_json).await,
        Command::Destinations { command } => destinations::run(&client()?, command, as_json).await,
        Command::Send(args) => send::run(&client()?, args, as_json).await,
        // Kafka only: no ingress URL or token involved.
        Command::Notifications { command } => notifications::run(command, as_json).await,
        // The database and the cluster, configured like the services.
        Command::Admin { command } => admin::run(command, as_json).await,
    }
}
