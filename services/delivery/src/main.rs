//! `carrier-delivery`: loads its configuration, binds its sockets and runs until SIGTERM.
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    carrier_telemetry::handle_command_line("carrier-delivery");
    // Held until the service stopped: the last spans are exported then (bounded wait).
    let _tracing = carrier_telemetry::init_tracing("delivery");
    let config = match carrier_delivery::Config::load() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("carrier-delivery: {error}");
            std::process::exit(2);
        }
    };
    let listeners = carrier_delivery::Listeners::bind(&config).await?;
    carrier_delivery::run(config, listeners, carrier_telemetry::shutdown_on_signal()).await
}
