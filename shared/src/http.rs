//! The HTTP edge: request body parsing and the one error type every API answer
//! maps through.

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::domain::FieldError;
use crate::ports::{QueueError, StoreError};

/// Largest request body accepted (API Gateway allows more; messages never need it).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

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
    /// A webhook whose signature is missing, wrong or stale.
    #[error("{message}")]
    Forbidden {
        field: &'static str,
        message: String,
    },
    /// No valid HTTP Basic credentials; answered with `WWW-Authenticate`.
    #[error("valid credentials are required")]
    Unauthorized { realm: &'static str },
    /// The idempotency key was already used with a different request.
    #[error("{0}")]
    Conflict(String),
    #[error("request body exceeds {MAX_BODY_BYTES} bytes")]
    PayloadTooLarge,
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
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `{"errors":[{"field","message"}]}` response for this error.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let errors = match &self {
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
            Self::NotFound { field, .. } | Self::Forbidden { field, .. } => vec![ErrorItem {
                field: Some(field),
                message: self.to_string(),
            }],
            Self::Unauthorized { .. } => vec![ErrorItem {
                field: Some("authorization"),
                message: self.to_string(),
            }],
            Self::Conflict(_) => vec![ErrorItem {
                field: Some(crate::domain::idempotency::HEADER),
                message: self.to_string(),
            }],
            Self::PayloadTooLarge => vec![ErrorItem {
                field: Some("body"),
                message: self.to_string(),
            }],
            Self::UnsupportedMediaType { .. } => vec![ErrorItem {
                field: Some("content-type"),
                message: self.to_string(),
            }],
            Self::Unavailable(_) => vec![ErrorItem {
                field: None,
                message: "the service is temporarily unavailable; retry the request".to_owned(),
            }],
        };
        let mut response = json_response(status, &ErrorBody { errors });
        if let Self::Unauthorized { realm } = &self
            && let Ok(value) = HeaderValue::try_from(format!("Basic realm=\"{realm}\""))
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

/// The `{id}` path parameter (`/messages/{id}`, `/conversations/{id}[/messages]`),
/// or the second path segment when the router passed no parameters.
pub fn path_id(request: &Request) -> String {
    use lambda_http::RequestExt;
    request
        .path_parameters_ref()
        .and_then(|params| params.first("id"))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            request
                .uri()
                .path()
                .trim_matches('/')
                .split('/')
                .nth(1)
                .unwrap_or_default()
                .to_owned()
        })
}

/// A JSON response with the given status.
pub fn json_response(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    // Serializing our own plain structs cannot fail; fall back to an empty object.
    raw_json_response(
        status,
        serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned()),
    )
}

/// A response with an already serialized JSON body.
pub fn raw_json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Body::Text(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Reads a request body as a JSON object: 415 for a declared non-JSON content
/// type, 413 above [`MAX_BODY_BYTES`], 400 for anything that is not a JSON object.
pub fn json_object_body(request: &Request) -> Result<Map<String, Value>, ApiError> {
    if let Some(content_type) = request.headers().get(header::CONTENT_TYPE) {
        let declared = content_type.to_str().unwrap_or_default();
        if !is_json_media_type(declared) {
            return Err(ApiError::UnsupportedMediaType {
                declared: declared.to_owned(),
                expected: "application/json",
            });
        }
    }
    let bytes: &[u8] = request.body().as_ref();
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(bad_body("request body is empty; send a JSON object"));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(bad_body("request body must be a JSON object")),
        Err(e) => Err(bad_body(format!("request body is not valid JSON: {e}"))),
    }
}

fn bad_body(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest {
        field: Some("body".to_owned()),
        message: message.into(),
    }
}

/// A `Content-Type` value without its parameters, lower-cased (`type/subtype`).
pub fn media_type_essence(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn is_json_media_type(value: &str) -> bool {
    let essence = media_type_essence(value);
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(content_type: Option<&str>, body: &str) -> Request {
        let mut builder = lambda_http::http::Request::builder()
            .method("POST")
            .uri("/messages/outbound");
        if let Some(ct) = content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        builder.body(Body::Text(body.to_owned())).unwrap()
    }

    fn error_json(e: ApiError) -> (u16, Value) {
        let response = e.into_response();
        let status = response.status().as_u16();
        let body: Value = serde_json::from_slice(response.body().as_ref()).unwrap();
        (status, body)
    }

    #[test]
    fn accepts_json_objects() {
        for ct in [
            None,
            Some("application/json"),
            Some("application/json; charset=utf-8"),
            Some("application/vnd.api+json"),
        ] {
            let map = json_object_body(&request(ct, r#"{"a":1}"#)).unwrap();
            assert_eq!(map["a"], 1);
        }
    }

    #[test]
    fn rejects_other_content_types_with_415() {
        let err = json_object_body(&request(Some("text/plain"), r#"{"a":1}"#)).unwrap_err();
        let (status, body) = error_json(err);
        assert_eq!(status, 415);
        assert_eq!(body["errors"][0]["field"], "content-type");
    }

    #[test]
    fn rejects_malformed_json_with_400() {
        for body in ["{", "", "[1,2]", "\"text\"", "null"] {
            let err = json_object_body(&request(Some("application/json"), body)).unwrap_err();
            let (status, json) = error_json(err);
            assert_eq!(status, 400, "{body:?}");
            assert_eq!(json["errors"][0]["field"], "body");
        }
    }

    #[test]
    fn rejects_large_bodies_with_413() {
        let big = format!(r#"{{"body":"{}"}}"#, "x".repeat(MAX_BODY_BYTES));
        let (status, _) = error_json(json_object_body(&request(None, &big)).unwrap_err());
        assert_eq!(status, 413);
    }

    #[test]
    fn validation_errors_list_every_field() {
        let (status, body) = error_json(ApiError::Validation(vec![
            FieldError::new("to", "bad"),
            FieldError::new("body", "empty"),
        ]));
        assert_eq!(status, 422);
        assert_eq!(body["errors"][1]["field"], "body");
        assert_eq!(body["errors"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn unavailable_does_not_leak_internals() {
        let response = ApiError::Unavailable("dynamodb said secret things".into()).into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let text = std::str::from_utf8(response.body().as_ref()).unwrap();
        assert!(!text.contains("secret"));
    }
}
