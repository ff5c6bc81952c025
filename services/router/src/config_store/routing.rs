//! The routing question: where does a source's message go?

use carrier_proto::config_v1 as pb;
use carrier_store::sqlx::{self, Row};
use uuid::Uuid;

use super::validation::parse_id;
use super::{ConfigStore, Result, StoreError, SOURCE_DISABLED};

impl ConfigStore {
    /// Where a message goes: the subscribed destinations of the source for this data model and
    /// event type, narrowed to `destination_ids` when the sender named some.
    pub async fn resolve(&self, request: &pb::ResolveRequest) -> Result<pb::ResolveResponse> {
        let source_id = parse_id("source", &request.source_id)?;
        let source = sqlx::query("SELECT organization_id, environment, enabled FROM sources WHERE id = $1")
            .bind(source_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::BadCredentials)?;
        if !source.get::<bool, _>("enabled") {
            return Err(StoreError::Forbidden(SOURCE_DISABLED.into()));
        }
        let rows = sqlx::query(
            "SELECT destination_id, event_types FROM subscriptions
             WHERE source_id = $1 AND data_model = $2 ORDER BY created_at, id",
        )
        .bind(source_id)
        .bind(&request.data_model)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Err(StoreError::NotFound(format!(
                "No destination is subscribed to data model {} from this source",
                request.data_model
            )));
        }
        let subscribed: Vec<String> = rows
            .iter()
            .filter(|row| {
                let event_types: Vec<String> = row.get("event_types");
                event_types.is_empty() || event_types.iter().any(|t| t == &request.event_type)
            })
            .map(|row| row.get::<Uuid, _>("destination_id").to_string())
            .collect();
        let destination_ids = if request.destination_ids.is_empty() {
            if subscribed.is_empty() {
                return Err(StoreError::NotFound(format!(
                    "No destination is subscribed to event type {} of data model {}",
                    request.event_type, request.data_model
                )));
            }
            subscribed
        } else {
            let mut chosen = Vec::with_capacity(request.destination_ids.len());
            for id in &request.destination_ids {
                if chosen.contains(id) {
                    continue;
                }
                if !subscribed.contains(id) {
                    // One of the source's organization's destinations, not subscribed: 403.
                    // Unknown, or another organization's: the same 404, so a sender cannot
                    // learn which destination IDs exist outside its organization.
                    let organization_id = source.get::<Uuid, _>("organization_id").to_string();
                    let own = match self.get_destination(id).await {
                        Ok(destination) => destination.organization_id == organization_id,
                        Err(StoreError::Invalid(_) | StoreError::NotFound(_)) => false,
                        Err(other) => return Err(other),
                    };
                    if !own {
                        return Err(StoreError::NotFound(format!("Destination {id} does not exist")));
                    }
                    return Err(StoreError::Forbidden(format!(
                        "Destination {id} is not subscribed to {} {} from this source",
                        request.data_model, request.event_type
                    )));
                }
                chosen.push(id.clone());
            }
            chosen
        };
        Ok(pb::ResolveResponse {
            organization_id: source.get::<Uuid, _>("organization_id").to_string(),
            environment: source.get("environment"),
            destination_ids,
        })
    }
}
