//! `make up`'s last step: configures an organization, a source, a destination (the sample
//! receiver) and a subscription through the admin API, sends one message as the source, waits
//! for its log to be `delivered`, and prints what happened and where to look.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use carrier_testkit::client::{message, Api, Sender};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    carrier_telemetry::print_version_if_asked("carrier-demo");
    let ingress = std::env::var("CARRIER_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let admin_token = std::env::var("CARRIER_ADMIN_TOKEN").unwrap_or_else(|_| "dev-admin-token".into());
    let receiver = std::env::var("RECEIVER_URL").unwrap_or_else(|_| "http://127.0.0.1:9000/adt".into());
    let api = Api::new(&ingress, &admin_token);

    let Sender {
        organization,
        source,
        destination,
        token,
    } = api
        .sender("Demo Hospital", "production", &receiver, "PatientAdmin")
        .await;
    let destination_id = destination["id"].as_str().unwrap_or_default().to_string();
    println!("configured: organization {organization}, source {} (client_id {}), destination {destination_id} -> {receiver}", source.id, source.client_id);

    let (status, response) = api.send(&token, &message("PatientAdmin", 1)).await;
    println!("POST /endpoint -> {status} {response}");
    anyhow::ensure!(status == 200, "the sample message was not accepted");
    let log_id = response["Meta"]["Logs"][0]["ID"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    let started = Instant::now();
    loop {
        let (status, log) = api.log(&token, &log_id).await;
        if status == 200 && log["status"] == "delivered" {
            println!("log {log_id}: delivered in {} ms", started.elapsed().as_millis());
            println!("{}", serde_json::to_string_pretty(&log)?);
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "log {log_id} not delivered within 60 s (last: {status} {log})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!();
    println!("Try it yourself:");
    println!("  TOKEN=$(curl -s -X POST {ingress}/oauth/token -d 'grant_type=client_credentials&client_id={}&client_secret={}' | sed 's/.*\"access_token\":\"\\([^\"]*\\)\".*/\\1/')", source.client_id, source.client_secret);
    println!("  curl -s -X POST {ingress}/endpoint -H \"Authorization: Bearer $TOKEN\" -H 'content-type: application/json' -d '{{\"Meta\":{{\"DataModel\":\"PatientAdmin\",\"EventType\":\"Arrival\"}}}}'");
    println!("  curl -s {ingress}/v1/logs/{log_id} -H 'Authorization: Bearer {admin_token}'");
    Ok(())
}
