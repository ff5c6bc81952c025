//! Where a message goes, asked of the router and remembered for a short while.
//!
//! Routing answers are reused for `route_cache_ttl_ms` (default 1 s): a subscription change
//! reaches senders within that time, and a burst from one source costs the router one call per
//! second instead of one per request. Errors are never cached.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use carrier_internal_auth::AuthenticatedChannel;
use carrier_proto::config_v1::config_service_client::ConfigServiceClient;
use carrier_proto::config_v1::{ResolveRequest, ResolveResponse};
use tracing::Instrument as _;

use crate::error::ApiError;

/// The most answers remembered. A full cache first forgets its expired answers, then, if still
/// full, all of them (they are cheap to ask again). Keys are bounded too: ingress takes at most
/// 100 destination IDs of 64 characters per message, and routing fields of 64.
const MAX_ENTRIES: usize = 10_000;

pub struct RouteCache {
    ttl: Duration,
    entries: Mutex<HashMap<ResolveKey, (Instant, ResolveResponse)>>,
}

#[derive(Hash, PartialEq, Eq, Clone)]
struct ResolveKey {
    source_id: String,
    data_model: String,
    event_type: String,
    destination_ids: Vec<String>,
}

impl RouteCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub async fn resolve(
        &self,
        router: &ConfigServiceClient<AuthenticatedChannel>,
        request: ResolveRequest,
    ) -> Result<ResolveResponse, ApiError> {
        let key = ResolveKey {
            source_id: request.source_id.clone(),
            data_model: request.data_model.clone(),
            event_type: request.event_type.clone(),
            destination_ids: request.destination_ids.clone(),
        };
        if !self.ttl.is_zero() {
            let entries = self.entries.lock().expect("route cache lock");
            if let Some((at, response)) = entries.get(&key) {
                if at.elapsed() < self.ttl {
                    tracing::Span::current().record("carrier.route.cached", true);
                    return Ok(response.clone());
                }
            }
        }
        tracing::Span::current().record("carrier.route.cached", false);
        let span = carrier_telemetry::trace::grpc_client_span("carrier.config.v1.ConfigService", "Resolve");
        let answer = router.clone().resolve(request).instrument(span.clone()).await;
        let code = answer.as_ref().map_or_else(|status| status.code() as i32, |_| 0);
        carrier_telemetry::trace::record_grpc_status(&span, code);
        drop(span);
        let response = answer?.into_inner();
        if !self.ttl.is_zero() {
            self.remember(key, response.clone());
        }
        Ok(response)
    }

    fn remember(&self, key: ResolveKey, response: ResolveResponse) {
        let mut entries = self.entries.lock().expect("route cache lock");
        if entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(key, (Instant::now(), response));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11 §3: however many different requests arrive within the TTL, the cache holds at
    /// most `MAX_ENTRIES` answers (each with a key bounded by ingress's field limits).
    #[test]
    fn the_cache_never_holds_more_than_its_bound() {
        let cache = RouteCache::new(Duration::from_secs(3600));
        for index in 0..MAX_ENTRIES * 2 + 17 {
            let key = ResolveKey {
                source_id: "source".into(),
                data_model: "Results".into(),
                event_type: format!("event-{index}"),
                destination_ids: vec![format!("{index:064}"); 2],
            };
            cache.remember(key, ResolveResponse::default());
            assert!(cache.entries.lock().unwrap().len() <= MAX_ENTRIES);
        }
    }

    #[test]
    fn a_full_cache_forgets_expired_answers_first() {
        let cache = RouteCache::new(Duration::from_millis(1));
        let key = |index: usize| ResolveKey {
            source_id: "source".into(),
            data_model: "Results".into(),
            event_type: format!("event-{index}"),
            destination_ids: Vec::new(),
        };
        for index in 0..MAX_ENTRIES {
            cache.remember(key(index), ResolveResponse::default());
        }
        std::thread::sleep(Duration::from_millis(5));
        cache.remember(key(MAX_ENTRIES), ResolveResponse::default());
        let entries = cache.entries.lock().unwrap();
        assert_eq!(entries.len(), 1, "only the new answer is left");
        assert!(entries.contains_key(&key(MAX_ENTRIES)));
    }
}
