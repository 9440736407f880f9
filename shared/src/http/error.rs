//! The one place errors become HTTP answers: every refusal is a status code and
//! a `{"errors":[{"field","message"}]}` body. Use cases return their own domain
//! errors; the `From` impls below decide their status codes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::access::AuthError;
use crate::api::{AcceptError, ReadError};
use crate::compliance::SuppressionError;
use crate::domain::FieldError;
use crate::domain::access::AccessError;
use crate::ports::{QueueError, StoreError};
use crate::webhooks::WebhookError;

use super::{IDEMPOTENCY_KEY, json_response};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest {
        field: Option<String>,
        message: String,
    },
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// Nothing under this id; `field` names what was looked up (`id`, `MessageSid`).
    #[error("{message}")]
    NotFound {
        field: &'static str,
        message: String,
    },
    #[error("{method} is not allowed on this route")]
    MethodNotAllowed { method: String },
    /// Refused: a webhook signature that is missing or wrong, or an API key
    /// without the route's scope.
    #[error("{message}")]
    Forbidden {
        field: &'static str,
        message: String,
    },
    /// No valid credentials; answered with `WWW-Authenticate: <challenge>`.
    #[error("{message}")]
    Unauthorized {
        field: &'static str,
        challenge: String,
        message: String,
    },
    /// The idempotency key was already used with a different request.
    #[error("{0}")]
    Conflict(String),
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("content type {declared:?} is not supported; send {expected}")]
    UnsupportedMediaType {
        declared: String,
        expected: &'static str,
    },
    /// A dependency failed; the request can be retried.
    #[error("{0}")]
    Unavailable(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    errors: Vec<ErrorItem<'a>>,
}

#[derive(Serialize)]
struct ErrorItem<'a> {
    field: Option<&'a str>,
    message: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn bad_request(field: &str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            field: Some(field.to_owned()),
            message: message.into(),
        }
    }

    fn items(&self) -> Vec<ErrorItem<'_>> {
        let one = |field: &'static str| {
            vec![ErrorItem {
                field: Some(field),
                message: self.to_string(),
            }]
        };
        match self {
            Self::Validation(fields) => fields
                .iter()
                .map(|e| ErrorItem {
                    field: Some(&e.field),
                    message: e.message.clone(),
                })
                .collect(),
            Self::BadRequest { field, .. } => vec![ErrorItem {
                field: field.as_deref(),
                message: self.to_string(),
            }],
            Self::NotFound { field, .. }
            | Self::Forbidden { field, .. }
            | Self::Unauthorized { field, .. } => one(field),
            Self::MethodNotAllowed { .. } => one("method"),
            Self::Conflict(_) => one(IDEMPOTENCY_KEY),
            Self::PayloadTooLarge { .. } => one("body"),
            Self::UnsupportedMediaType { .. } => one("content-type"),
            Self::Unavailable(_) => vec![ErrorItem {
                field: None,
                message: "the service is temporarily unavailable; retry the request".to_owned(),
            }],
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = json_response(
            status,
            &ErrorBody {
                errors: self.items(),
            },
        );
        if let Self::Unauthorized { challenge, .. } = &self
            && let Ok(value) = HeaderValue::try_from(challenge.as_str())
        {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<AcceptError> for ApiError {
    fn from(e: AcceptError) -> Self {
        match e {
            AcceptError::Invalid(fields) => Self::Validation(fields),
            AcceptError::IdempotencyKeyReused | AcceptError::IdempotencyKeyInProgress => {
                Self::Conflict(e.to_string())
            }
            AcceptError::Unavailable(reason) => Self::Unavailable(reason),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::NotFound { what, .. } => Self::NotFound {
                field: what.field(),
                message: e.to_string(),
            },
            ReadError::BadQuery(FieldError { field, message }) => Self::BadRequest {
                field: Some(field),
                message,
            },
            ReadError::Unavailable(reason) => Self::Unavailable(reason),
        }
    }
}

impl From<SuppressionError> for ApiError {
    fn from(e: SuppressionError) -> Self {
        match e {
            SuppressionError::Invalid(fields) => Self::Validation(fields),
            SuppressionError::BadParameter(FieldError { field, message }) => Self::BadRequest {
                field: Some(field),
                message,
            },
            SuppressionError::NotFound { .. } => Self::NotFound {
                field: "address",
                message: e.to_string(),
            },
            SuppressionError::Unavailable(reason) => Self::Unavailable(reason),
        }
    }
}

/// The challenge answered with every 401 of the API (RFC 6750).
pub const BEARER_CHALLENGE: &str = "Bearer realm=\"messaging\"";

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Refused(AccessError::MissingScope(_)) => Self::Forbidden {
                field: "Authorization",
                message: e.to_string(),
            },
            AuthError::Refused(_) => Self::Unauthorized {
                field: "Authorization",
                challenge: BEARER_CHALLENGE.to_owned(),
                message: e.to_string(),
            },
            AuthError::Unavailable(reason) => Self::Unavailable(reason),
        }
    }
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::Invalid(fields) => Self::Validation(fields),
            WebhookError::Malformed(FieldError { field, message }) => Self::BadRequest {
                field: Some(field),
                message,
            },
            WebhookError::SignatureRejected { header, .. } => Self::Forbidden {
                field: header,
                message: e.to_string(),
            },
            WebhookError::Unauthenticated { realm } => Self::Unauthorized {
                field: "authorization",
                challenge: format!("Basic realm=\"{realm}\""),
                message: e.to_string(),
            },
            WebhookError::UnknownMessage { .. } => Self::NotFound {
                field: "MessageSid",
                message: e.to_string(),
            },
            WebhookError::Unavailable(reason) => Self::Unavailable(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    async fn error_json(e: ApiError) -> (u16, Value) {
        let response = e.into_response();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn validation_errors_list_every_field() {
        let (status, body) = error_json(ApiError::Validation(vec![
            FieldError::new("to", "bad"),
            FieldError::new("body", "empty"),
        ]))
        .await;
        assert_eq!(status, 422);
        assert_eq!(body["errors"][1]["field"], "body");
        assert_eq!(body["errors"].as_array().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn unavailable_does_not_leak_internals() {
        let response = ApiError::Unavailable("dynamodb said secret things".into()).into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let (_, body) =
            error_json(ApiError::Unavailable("dynamodb said secret things".into())).await;
        assert!(!body.to_string().contains("secret"));
    }

    #[tokio::test]
    async fn unauthorized_carries_its_challenge() {
        let response = ApiError::Unauthorized {
            field: "Authorization",
            challenge: "Bearer realm=\"messaging\"".into(),
            message: "no key".into(),
        }
        .into_response();
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"messaging\""
        );
    }
}
