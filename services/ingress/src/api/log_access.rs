//! Which logs a caller may see, for every route that reads or retries logs (`logs`, `retry`):
//! the operator sees every log, a source only its organization's logs of its own environment.
//! Another's log answers the same 404 as one that does not exist, so a log's existence is not
//! revealed across organizations or environments.

use axum::http::HeaderMap;
use carrier_store::sqlx;
use carrier_store::sqlx::postgres::PgRow;
use uuid::Uuid;

use super::log_search::Scope;
use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::AppState;

/// What a caller's searches are restricted to: `None` for the operator (every log), the
/// source's organization and environment for a source token.
pub(crate) fn caller_scope(state: &AppState, headers: &HeaderMap) -> Result<Option<Scope>, ApiError> {
    let caller = auth::caller(
        headers,
        &state.tokens,
        state.config.admin_token.as_deref().expect("validated"),
    )?;
    match caller {
        Caller::Operator => Ok(None),
        Caller::Source(source) => {
            let organization_id = Uuid::parse_str(&source.organization_id)
                .map_err(|_| ApiError::internal("A signed token names an organization that is not a UUID"))?;
            Ok(Some(Scope {
                organization_id,
                environment: source.environment,
            }))
        }
    }
}

/// The log `id` if the caller may see it: the operator sees every log, a source only its
/// organization's of its own environment (others get the same 404 as a log that does not exist).
pub(crate) async fn visible_log(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
) -> Result<(Uuid, PgRow), ApiError> {
    let scope = caller_scope(state, headers)?;
    let not_found = || ApiError::not_found(format!("Log {id} not found"));
    let log_id = Uuid::parse_str(id).map_err(|_| not_found())?;
    let row = sqlx::query("SELECT * FROM logs WHERE id = $1")
        .bind(log_id)
        .fetch_optional(&state.log_store)
        .await?
        .ok_or_else(not_found)?;
    if scope.is_some_and(|scope| !scope.covers(&row)) {
        return Err(not_found());
    }
    Ok((log_id, row))
}
