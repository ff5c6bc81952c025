//! Subscriptions: which destinations get a source's messages of a data model (and event types).

use carrier_proto::config_v1 as pb;
use carrier_store::sqlx::{self, Row};
use uuid::Uuid;

use super::validation::{parse_id, required};
use super::{millis, ConfigStore, Result, StoreError};

impl ConfigStore {
    pub async fn create_subscription(
        &self,
        request: pb::CreateSubscriptionRequest,
    ) -> Result<pb::Subscription> {
        required("data_model", &request.data_model)?;
        let source = self
            .get_source(&request.source_id)
            .await
            .map_err(not_found_is_invalid)?;
        let destination = self
            .get_destination(&request.destination_id)
            .await
            .map_err(not_found_is_invalid)?;
        if source.organization_id != destination.organization_id {
            return Err(StoreError::Invalid(format!(
                "source {} and destination {} belong to different organizations",
                source.id, destination.id
            )));
        }
        if source.environment != destination.environment {
            return Err(StoreError::Invalid(format!(
                "source {} is in {} but destination {} is in {}: a subscription joins one environment",
                source.id, source.environment, destination.id, destination.environment
            )));
        }
        for event_type in &request.event_types {
            required("event_types[]", event_type)?;
        }
        let row = sqlx::query(
            "INSERT INTO subscriptions (id, source_id, destination_id, data_model, event_types)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (source_id, destination_id, data_model) DO UPDATE SET event_types = EXCLUDED.event_types
             RETURNING *",
        )
        .bind(Uuid::now_v7())
        .bind(parse_id("source_id", &source.id)?)
        .bind(parse_id("destination_id", &destination.id)?)
        .bind(&request.data_model)
        .bind(&request.event_types)
        .fetch_one(&self.pool)
        .await?;
        Ok(pb::Subscription {
            id: row.get::<Uuid, _>("id").to_string(),
            source_id: row.get::<Uuid, _>("source_id").to_string(),
            destination_id: row.get::<Uuid, _>("destination_id").to_string(),
            data_model: row.get("data_model"),
            event_types: row.get("event_types"),
            created_at_ms: millis(row.get("created_at")),
        })
    }
}

/// A subscription naming a missing source or destination is a bad request, not a missing route.
fn not_found_is_invalid(error: StoreError) -> StoreError {
    match error {
        StoreError::NotFound(text) => StoreError::Invalid(text),
        other => other,
    }
}
