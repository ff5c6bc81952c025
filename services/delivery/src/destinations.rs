//! Destination settings, read from the router at send time and reused for a short while.
//! A `PATCH /v1/destinations/{id}` (say, a fixed URL) reaches the next attempt within
//! `destination_cache_ttl_ms`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use carrier_internal_auth::{AuthenticatedChannel, InternalAuth};
use carrier_proto::config_v1::config_service_client::ConfigServiceClient;
use carrier_proto::config_v1::{Destination, GetByIdRequest};

/// Why settings could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The destination was deleted (or never existed): its tasks cannot be delivered.
    #[error("destination {0} does not exist")]
    Gone(String),
    /// The router did not answer; try again later (this is not the destination's failure).
    #[error("router unavailable: {0}")]
    Unavailable(String),
}

pub struct Destinations {
    router: ConfigServiceClient<AuthenticatedChannel>,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, Arc<Destination>)>>,
}

impl Destinations {
    pub fn new(internal_auth: &InternalAuth, router_url: &str, ttl: Duration) -> anyhow::Result<Self> {
        let channel = internal_auth.channel(router_url, Duration::from_secs(2), Duration::from_secs(5))?;
        Ok(Self {
            router: ConfigServiceClient::new(channel),
            ttl,
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub async fn get(&self, id: &str) -> Result<Arc<Destination>, LookupError> {
        if let Some((at, destination)) = self.cache.lock().expect("destination cache lock").get(id) {
            if at.elapsed() < self.ttl {
                return Ok(destination.clone());
            }
        }
        self.fresh(id).await
    }

    /// Asks the router now, and keeps the answer for the next `get`s.
    pub async fn fresh(&self, id: &str) -> Result<Arc<Destination>, LookupError> {
        match self
            .router
            .clone()
            .get_destination(GetByIdRequest { id: id.to_string() })
            .await
        {
            Ok(response) => Ok(self.put(response.into_inner())),
            Err(status)
                if status.code() == tonic::Code::NotFound
                    || status.code() == tonic::Code::InvalidArgument =>
            {
                Err(LookupError::Gone(id.to_string()))
            }
            Err(status) => Err(LookupError::Unavailable(status.message().to_string())),
        }
    }

    /// Replaces the cached settings of a destination (the router just answered a change with
    /// them), so this worker's lanes act on the change at once.
    pub fn put(&self, destination: Destination) -> Arc<Destination> {
        let destination = Arc::new(destination);
        let mut cache = self.cache.lock().expect("destination cache lock");
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(destination.id.clone(), (Instant::now(), destination.clone()));
        destination
    }

    /// The router, for the control service's writes (configuration is the router's).
    pub fn router(&self) -> ConfigServiceClient<AuthenticatedChannel> {
        self.router.clone()
    }
}
