//! Why a request is refused: one enum for every operation and transport.
//! HTTP answers with [`ApiError::status`]; WebSocket with an `error`
//! message. Both carry the same `code` and the same message.

use std::fmt;

use herald_core::broker::BrokerError;
use herald_core::broker::CheckpointError;

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApiError {
    /// Malformed, of the wrong type, or out of its bounds (400).
    Invalid(String),
    /// No token, or a bad or expired one (401).
    Unauthenticated(String),
    /// Authenticated, but outside the token's grants (403).
    Forbidden(String),
    /// Names something that does not exist: an endpoint, a consumer, a
    /// subscription (404).
    NotFound(String),
    /// The endpoint exists, not with this method (405).
    MethodNotAllowed,
    /// A payload over the limit (413).
    TooLarge(String),
    /// Well-formed, but the payload breaks a configured schema (422).
    Unprocessable(String),
    /// Over a rate limit (429): retry after the time given.
    RateLimited {
        message: String,
        retry_after: std::time::Duration,
    },
    /// The server is at a capacity bound shared by several clients (503):
    /// retrying later, or elsewhere, may succeed.
    Unavailable(String),
    /// The server failed (500): nothing the client can fix.
    Internal(String),
}

impl ApiError {
    /// The HTTP status and reason phrase.
    pub(crate) fn status(&self) -> (u16, &'static str) {
        match self {
            ApiError::Invalid(_) => (400, "Bad Request"),
            ApiError::Unauthenticated(_) => (401, "Unauthorized"),
            ApiError::Forbidden(_) => (403, "Forbidden"),
            ApiError::NotFound(_) => (404, "Not Found"),
            ApiError::MethodNotAllowed => (405, "Method Not Allowed"),
            ApiError::TooLarge(_) => (413, "Payload Too Large"),
            ApiError::Unprocessable(_) => (422, "Unprocessable Content"),
            ApiError::RateLimited { .. } => (429, "Too Many Requests"),
            ApiError::Unavailable(_) => (503, "Service Unavailable"),
            ApiError::Internal(_) => (500, "Internal Server Error"),
        }
    }

    /// The machine-readable kind, the same on every transport.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid(_) => "invalid",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::TooLarge(_) => "too_large",
            ApiError::Unprocessable(_) => "schema",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The human-readable message.
    pub(crate) fn message(&self) -> &str {
        match self {
            ApiError::Invalid(m)
            | ApiError::Unauthenticated(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::TooLarge(m)
            | ApiError::Unprocessable(m)
            | ApiError::RateLimited { message: m, .. }
            | ApiError::Unavailable(m)
            | ApiError::Internal(m) => m,
            ApiError::MethodNotAllowed => "method not allowed",
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::Invalid(message.into())
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> ApiError {
        let message = e.to_string();
        match e {
            BrokerError::UnknownConsumer(_) => ApiError::NotFound(message),
            BrokerError::PayloadTooLarge { .. } => ApiError::TooLarge(message),
            BrokerError::Checkpoint(CheckpointError::InvalidName { .. }) => {
                ApiError::Invalid(message)
            }
            BrokerError::Log(_)
            | BrokerError::Io { .. }
            | BrokerError::Checkpoint(_)
            | BrokerError::CorruptRegistry { .. }
            | BrokerError::InvalidConfig(_) => {
                tracing::warn!("request failed in the broker: {message}");
                ApiError::Internal(message)
            }
            _ => ApiError::Invalid(message),
        }
    }
}

impl ApiError {
    /// A decoding error at `path` (serde_path_to_error's, `.` or `?` at
    /// the top): the message names the field.
    pub(crate) fn at_path(path: &serde_path_to_error::Path, message: &str) -> ApiError {
        let path = path.to_string();
        if path == "." || path == "?" {
            ApiError::Invalid(message.to_owned())
        } else {
            ApiError::Invalid(format!("'{path}': {message}"))
        }
    }
}
