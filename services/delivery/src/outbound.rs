//! Delivery's side of outbound safety. The policy itself — address classes, the `[outbound]`
//! settings, the resolver that checks every address at connect time, the client without proxies
//! — is `carrier-outbound`, shared with the notifier's Slack client; this module re-exports it
//! and counts delivery's refusals.

pub use carrier_outbound::{
    classify, client_builder, refusal_in, AddressClass, OutboundPolicy, OutboundSettings, PolicyResolver,
    Refused,
};

/// Counts a refused attempt (`carrier_delivery_outbound_refused_total{class}`).
pub fn count_refusal(refused: &Refused) {
    crate::metrics::metrics()
        .outbound_refused
        .with_label_values(&[refused.class.metric_label()])
        .inc();
}
