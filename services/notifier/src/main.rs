//! `carrier-notifier`: loads its configuration, binds its socket and runs until SIGTERM.
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    carrier_telemetry::handle_command_line("carrier-notifier");
    // Held until the service stopped: the last spans are exported then (bounded wait).
    let _tracing = carrier_telemetry::init_tracing("notifier");
    let config = match carrier_notifier::Config::load() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("carrier-notifier: {error}");
            std::process::exit(2);
        }
    };
    let listener = tokio::net::TcpListener::bind(config.http_addr).await?;
    carrier_notifier::run(config, listener, carrier_telemetry::shutdown_on_signal()).await
}
