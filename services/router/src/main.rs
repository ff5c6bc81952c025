//! `carrier-router`: loads its configuration, binds its sockets and runs until SIGTERM.
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    carrier_telemetry::handle_command_line("carrier-router");
    // Held until the service stopped: the last spans are exported then (bounded wait).
    let _tracing = carrier_telemetry::init_tracing("router");
    let config = match carrier_router::Config::load() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("carrier-router: {error}");
            std::process::exit(2);
        }
    };
    let listeners = carrier_router::Listeners::bind(&config).await?;
    carrier_router::run(config, listeners, carrier_telemetry::shutdown_on_signal()).await
}
