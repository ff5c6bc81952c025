//! One mapping from what went wrong to the HTTP status and the gRPC code that say it.
//! Services convert their domain errors to an [`ErrorKind`]; REST handlers and gRPC servers and
//! clients all go through the tables below, so a `NotFound` is a 404 and `NOT_FOUND` everywhere.

/// The text of every refusal of a disabled source, by whichever service refuses it (ingress's
/// token check, the router's credentials and routing): one wording for the sender.
pub const SOURCE_DISABLED: &str = "Source is disabled";

/// The kinds of failure Carrier reports to callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed or missing input (400).
    BadRequest,
    /// Missing, invalid or expired credentials (401).
    Unauthorized,
    /// Authenticated, but not allowed (403).
    Forbidden,
    /// No such route, data model, destination or log (404).
    NotFound,
    /// The route exists, but not for this HTTP method (405). HTTP only: a peer's
    /// `UNIMPLEMENTED` stays an internal error.
    MethodNotAllowed,
    /// The request does not fit the current state (409), e.g. skipping a queue with no head.
    Conflict,
    /// The body is over the size limit (413).
    PayloadTooLarge,
    /// The client did not send its whole request in time (408). HTTP only: a gRPC peer's
    /// `DEADLINE_EXCEEDED` stays [`ErrorKind::Timeout`].
    RequestTimeout,
    /// Too many requests from one client (429).
    RateLimited,
    /// Carrier itself failed in a way it did not foresee (500).
    Internal,
    /// The queue dropped or rejected the write, or a peer service is unreachable (502).
    QueueRejected,
    /// Overloaded: a bounded queue is full; come back later (503).
    Overloaded,
    /// The durable write did not complete in time (504).
    Timeout,
}

impl ErrorKind {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::Conflict => 409,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::RateLimited => 429,
            ErrorKind::Internal => 500,
            ErrorKind::QueueRejected => 502,
            ErrorKind::Overloaded => 503,
            ErrorKind::Timeout => 504,
        }
    }

    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorKind::BadRequest => tonic::Code::InvalidArgument,
            ErrorKind::Unauthorized => tonic::Code::Unauthenticated,
            ErrorKind::Forbidden => tonic::Code::PermissionDenied,
            ErrorKind::NotFound => tonic::Code::NotFound,
            ErrorKind::MethodNotAllowed => tonic::Code::Unimplemented,
            ErrorKind::Conflict => tonic::Code::FailedPrecondition,
            ErrorKind::PayloadTooLarge => tonic::Code::OutOfRange,
            ErrorKind::RateLimited | ErrorKind::Overloaded => tonic::Code::ResourceExhausted,
            ErrorKind::Internal => tonic::Code::Internal,
            ErrorKind::QueueRejected => tonic::Code::Unavailable,
            ErrorKind::Timeout | ErrorKind::RequestTimeout => tonic::Code::DeadlineExceeded,
        }
    }

    /// The kind a gRPC status from a peer service stands for. A peer that cannot be reached
    /// (`Unavailable`, `Unknown` transport errors) is a 502 to the caller.
    pub fn from_grpc_code(code: tonic::Code) -> ErrorKind {
        match code {
            tonic::Code::InvalidArgument | tonic::Code::AlreadyExists => ErrorKind::BadRequest,
            tonic::Code::FailedPrecondition => ErrorKind::Conflict,
            tonic::Code::Unauthenticated => ErrorKind::Unauthorized,
            tonic::Code::PermissionDenied => ErrorKind::Forbidden,
            tonic::Code::NotFound => ErrorKind::NotFound,
            tonic::Code::OutOfRange => ErrorKind::PayloadTooLarge,
            tonic::Code::ResourceExhausted => ErrorKind::Overloaded,
            tonic::Code::DeadlineExceeded => ErrorKind::Timeout,
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
                ErrorKind::QueueRejected
            }
            _ => ErrorKind::Internal,
        }
    }

    /// A gRPC status of this kind with a message for the caller.
    pub fn status(self, message: impl Into<String>) -> tonic::Status {
        tonic::Status::new(self.grpc_code(), message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_round_trip_keeps_the_kind() {
        let kinds = [
            ErrorKind::BadRequest,
            ErrorKind::Unauthorized,
            ErrorKind::Forbidden,
            ErrorKind::NotFound,
            ErrorKind::Conflict,
            ErrorKind::PayloadTooLarge,
            ErrorKind::Internal,
            ErrorKind::QueueRejected,
            ErrorKind::Overloaded,
            ErrorKind::Timeout,
        ];
        for kind in kinds {
            assert_eq!(ErrorKind::from_grpc_code(kind.grpc_code()), kind, "{kind:?}");
        }
    }
}
