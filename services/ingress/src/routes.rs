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
                    return Ok(response.clone());
                }
            }
        }
        let response = router.clone().resolve(request).await?.into_inner();
        if !self.ttl.is_zero() {
            let mut entries = self.entries.lock().expect("route cache lock");
            if entries.len() >= MAX_ENTRIES {
                let ttl = self.ttl;
                entries.retain(|_, (at, _)| at.elapsed() < ttl);
            }
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(key, (Instant::now(), response.clone()));
        }
        Ok(response)
    }
}
