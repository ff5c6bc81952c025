//! `POST /fhir/R4/{ResourceType}`: the FHIR API.
//!
//! The body is one FHIR R4 resource (JSON) whose `resourceType` equals the path's type, or a
//! `Bundle` posted to `/fhir/R4/Bundle`. It takes the same way as a Data Model API message
//! (`accept`: router `Resolve`, durable write, 200 only after acks=all); only reading the
//! request and shaping the answers differ. Decisions:
//!
//! - **Data model** = the resource type of the path: `Patient`, `Observation`, ... A Bundle
//!   routes as data model `Bundle`, whatever its entries hold (mixed entries are normal in
//!   `message`, `transaction` and `collection` Bundles; a destination that wants them subscribes
//!   to `Bundle`). Carrier does not split or inspect entries.
//! - **Event type**: a single resource posted here is a FHIR `create` interaction, so its event
//!   type is `create`. A Bundle's event type is its `Bundle.type` (`message`, `transaction`,
//!   `batch`, `collection`, `document`, `history`, `searchset`; required).
//! - **Test messages**: FHIR has no `Meta.Test`; the header `Carrier-Test: true` marks one
//!   (`false` or absent: a real message). It is the same header receivers get.
//! - **Answers** are `OperationOutcome`s: 200 with an empty `issue[]` and the IDs in the headers
//!   `Carrier-Message-Id` and `Carrier-Log-Ids` (comma-separated, one per destination); errors
//!   come from `error::ApiError` rendered for [`Api::Fhir`], with the same statuses and texts
//!   as the Data Model API.
//! - An unknown resource type in the path is an unknown route: 404 before authentication, as
//!   for any other unknown route.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use super::submission::Submission;
use crate::error::{fhir_json, Api, ApiError, OperationOutcome};
use crate::AppState;

/// The event type of a single resource: posting to `/fhir/R4/{type}` is FHIR's `create`.
pub const RESOURCE_EVENT_TYPE: &str = "create";

/// FHIR R4's `bundle-type` value set: a Bundle's `type` is its event type (a header value and a
/// log store column), so only these are taken.
pub const BUNDLE_TYPES: &[&str] = &[
    "document",
    "message",
    "transaction",
    "transaction-response",
    "batch",
    "batch-response",
    "history",
    "searchset",
    "collection",
];

/// The header that marks a FHIR message as a test message.
pub const TEST_HEADER: &str = "carrier-test";

/// Every resource type of FHIR R4 (4.0.1): the `ResourceType` value set without the abstract
/// `Resource` and `DomainResource`. Sorted (binary search).
pub const R4_RESOURCE_TYPES: &[&str] = &[
    "Account",
    "ActivityDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "CatalogEntry",
    "ChargeItem",
    "ChargeItemDefinition",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceDefinition",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EffectEvidenceSynthesis",
    "Encounter",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "InsurancePlan",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionOrder",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "RiskEvidenceSynthesis",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "Substance",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestReport",
    "TestScript",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

/// The two fields Carrier reads; serde skips (but still checks the syntax of) the rest.
#[derive(Deserialize)]
struct Head {
    #[serde(rename = "resourceType")]
    resource_type: Option<Value>,
    #[serde(rename = "type")]
    bundle_type: Option<Value>,
}

/// 404 unless `resource_type` is a FHIR R4 resource type.
pub fn check_resource_type(resource_type: &str) -> Result<(), ApiError> {
    if R4_RESOURCE_TYPES.binary_search(&resource_type).is_ok() {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "Unknown FHIR R4 resource type {resource_type} in /fhir/R4/{resource_type}"
        )))
    }
}

/// Reads a FHIR request posted to `/fhir/R4/{path_type}`. Every error names the field.
pub fn parse(path_type: &str, headers: &HeaderMap, body: &[u8]) -> Result<Submission, ApiError> {
    let test = match headers.get(TEST_HEADER).map(|value| value.to_str()) {
        None => false,
        Some(Ok(value)) if value.eq_ignore_ascii_case("true") => true,
        Some(Ok(value)) if value.eq_ignore_ascii_case("false") => false,
        Some(_) => {
            return Err(ApiError::bad_request(
                "Carrier-Test header must be 'true' or 'false'",
            ))
        }
    };
    super::body::require_json_object(body)?;
    let head: Head = serde_json::from_slice(body)
        .map_err(|error| ApiError::bad_request(format!("Request body is not valid JSON: {error}")))?;
    let resource_type = match head.resource_type {
        Some(Value::String(value)) if !value.is_empty() => value,
        None | Some(Value::Null) | Some(Value::String(_)) => {
            return Err(ApiError::bad_request("Required field missing - resourceType"))
        }
        Some(_) => return Err(ApiError::bad_request("resourceType must be a string")),
    };
    if resource_type != path_type {
        return Err(ApiError::bad_request(format!(
            "resourceType {resource_type} does not match the resource type of the path /fhir/R4/{path_type}"
        )));
    }
    let event_type = if resource_type == "Bundle" {
        match head.bundle_type {
            Some(Value::String(value)) if BUNDLE_TYPES.contains(&value.as_str()) => value,
            Some(Value::String(value)) if !value.is_empty() => {
                return Err(ApiError::bad_request(format!(
                    "Bundle.type must be one of {} (FHIR R4 bundle-type)",
                    BUNDLE_TYPES.join(", ")
                )))
            }
            None | Some(Value::Null) | Some(Value::String(_)) => {
                return Err(ApiError::bad_request("Required field missing - Bundle.type"))
            }
            Some(_) => return Err(ApiError::bad_request("Bundle.type must be a string")),
        }
    } else {
        RESOURCE_EVENT_TYPE.to_string()
    };
    Ok(Submission {
        data_model: resource_type,
        event_type,
        test,
        destination_ids: Vec::new(),
    })
}

#[utoipa::path(
    post,
    path = "/fhir/R4/{resource_type}",
    operation_id = "post_fhir_resource",
    tag = "FHIR API",
    params(
        ("resource_type" = String, Path, description = "A FHIR R4 resource type; the data model of the message"),
        ("Carrier-Test" = Option<bool>, Header, description = "true: a test message"),
        ("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key within 24 h gets the original answer (same IDs) instead of sending twice"),
    ),
    request_body(content = serde_json::Value, content_type = "application/fhir+json", description = "A FHIR resource whose resourceType is the path's, or a Bundle"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Written to Kafka with acks=all; empty issue list", body = crate::error::OperationOutcome, content_type = "application/fhir+json",
            headers(
                ("Carrier-Message-Id" = String, description = "The message ID"),
                ("Carrier-Log-Ids" = String, description = "One log ID per destination, comma-separated"),
            )),
        (status = 400, description = "Malformed or missing required data", body = crate::error::OperationOutcome, content_type = "application/fhir+json"),
        (status = 401, description = "Missing, invalid or expired token", body = crate::error::OperationOutcome, content_type = "application/fhir+json"),
        (status = 403, description = "Not allowed", body = crate::error::OperationOutcome, content_type = "application/fhir+json"),
        (status = 404, description = "Unknown route, data model, destination or resource", body = crate::error::OperationOutcome, content_type = "application/fhir+json"),
        (status = 405, description = "Method not allowed", body = crate::error::OperationOutcome, content_type = "application/fhir+json"),
        (status = 409, description = "A request with the same Idempotency-Key is in progress (with Retry-After)", body = crate::error::OperationOutcome, content_type = "application/fhir+json"),
        (status = 500, description = "Unknown internal error", body = crate::error::OperationOutcome, content_type = "application/fhir+json"),
        (status = 502, description = "The queue rejected or dropped the write, or a peer is unreachable", body = crate::error::OperationOutcome, content_type = "application/fhir+json"),
        crate::openapi::FhirEveryRouteErrors,
    )
)]
pub async fn post(
    State(state): State<Arc<AppState>>,
    Path(resource_type): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = std::time::Instant::now();
    let result = accept(&state, &resource_type, &headers, body).await;
    super::accept::record_outcome(Api::Fhir, started, &result);
    match result {
        Ok(response) => response,
        Err(error) => axum::response::IntoResponse::into_response(error.for_api(Api::Fhir)),
    }
}

async fn accept(
    state: &AppState,
    resource_type: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    check_resource_type(resource_type)?;
    let (source_id, body) = super::accept::authenticated_body(state, headers, body).await?;
    let submission = parse(resource_type, headers, &body)?;
    let accepted = super::accept::submit(state, headers, &source_id, &submission, body).await?;
    let log_ids: Vec<&str> = accepted
        .routes
        .iter()
        .map(|route| route.log_id.as_str())
        .collect();
    let mut response = fhir_json(StatusCode::OK, &OperationOutcome::success());
    super::accept::mark_replayed(&accepted, &mut response);
    let headers = response.headers_mut();
    for (name, value) in [
        ("carrier-message-id", accepted.message_id),
        ("carrier-log-ids", log_ids.join(",")),
    ] {
        let value = HeaderValue::from_str(&value).map_err(|_| ApiError::internal("Internal error"))?;
        headers.insert(name, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submission(path_type: &str, body: &str) -> Result<Submission, String> {
        parse(path_type, &HeaderMap::new(), body.as_bytes()).map_err(|error| error.text)
    }

    #[test]
    fn the_resource_type_list_is_sorted_and_complete() {
        let mut sorted = R4_RESOURCE_TYPES.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted, R4_RESOURCE_TYPES,
            "sorted without repeats (binary search)"
        );
        assert_eq!(
            R4_RESOURCE_TYPES.len(),
            146,
            "FHIR R4 4.0.1 defines 146 concrete resource types"
        );
        assert!(check_resource_type("Patient").is_ok());
        let error = check_resource_type("Patients").unwrap_err();
        assert_eq!(error.kind.http_status(), 404);
        assert_eq!(
            error.text,
            "Unknown FHIR R4 resource type Patients in /fhir/R4/Patients"
        );
    }

    #[test]
    fn a_resource_routes_as_its_type_with_event_type_create() {
        let parsed = submission("Patient", r#"{"resourceType": "Patient", "id": "p1", "type": 3}"#).unwrap();
        assert_eq!(
            parsed,
            Submission {
                data_model: "Patient".into(),
                event_type: "create".into(),
                test: false,
                destination_ids: vec![],
            }
        );
    }

    #[test]
    fn a_bundle_routes_as_bundle_with_its_type_as_event_type() {
        let parsed = submission(
            "Bundle",
            r#"{"resourceType": "Bundle", "type": "message", "entry": [{"resource": {"resourceType": "MessageHeader"}}, {"resource": {"resourceType": "Patient"}}]}"#,
        )
        .unwrap();
        assert_eq!(
            (parsed.data_model.as_str(), parsed.event_type.as_str()),
            ("Bundle", "message")
        );
        assert_eq!(
            submission("Bundle", r#"{"resourceType": "Bundle"}"#).unwrap_err(),
            "Required field missing - Bundle.type"
        );
        assert_eq!(
            submission("Bundle", r#"{"resourceType": "Bundle", "type": ["message"]}"#).unwrap_err(),
            "Bundle.type must be a string"
        );
        assert_eq!(
            submission("Bundle", r#"{"resourceType": "Bundle", "type": "mess\u0000age"}"#).unwrap_err(),
            "Bundle.type must be one of document, message, transaction, transaction-response, batch, batch-response, history, searchset, collection (FHIR R4 bundle-type)"
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            submission("Patient", r#"{"id": "p1"}"#).unwrap_err(),
            "Required field missing - resourceType"
        );
        assert_eq!(
            submission("Patient", r#"{"resourceType": 7}"#).unwrap_err(),
            "resourceType must be a string"
        );
        assert_eq!(
            submission("Patient", r#"{"resourceType": "Observation"}"#).unwrap_err(),
            "resourceType Observation does not match the resource type of the path /fhir/R4/Patient"
        );
        assert_eq!(
            submission("Patient", r#"[{"resourceType": "Patient"}]"#).unwrap_err(),
            "Request body must be a JSON object"
        );
        assert!(submission("Patient", r#"{"resourceType": "Patient""#)
            .unwrap_err()
            .starts_with("Request body is not valid JSON"));
    }

    #[test]
    fn the_test_header_marks_test_messages() {
        let body = br#"{"resourceType": "Patient"}"#;
        let mut headers = HeaderMap::new();
        headers.insert(TEST_HEADER, HeaderValue::from_static("true"));
        assert!(parse("Patient", &headers, body).unwrap().test);
        headers.insert(TEST_HEADER, HeaderValue::from_static("False"));
        assert!(!parse("Patient", &headers, body).unwrap().test);
        headers.insert(TEST_HEADER, HeaderValue::from_static("yes"));
        assert_eq!(
            parse("Patient", &headers, body).unwrap_err().text,
            "Carrier-Test header must be 'true' or 'false'"
        );
    }
}
