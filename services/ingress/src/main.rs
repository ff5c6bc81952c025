//! `carrier-ingress`: loads its configuration, binds its socket and runs until SIGTERM.
#![forbid(unsafe_code)]

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    carrier_telemetry::handle_command_line("carrier-ingress");
    // Held until the service stopped: the last spans are exported then (bounded wait).
    let _tracing = carrier_telemetry::init_tracing("ingress");
    let config = match carrier_ingress::Config::load() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("carrier-ingress: {error}");
            std::process::exit(2);
        }
    };
    let listeners = carrier_ingress::Listeners::bind(&config).await?;
    carrier_ingress::run(config, listeners, carrier_telemetry::shutdown_on_signal()).await
}
