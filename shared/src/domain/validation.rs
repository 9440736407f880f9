//! Validation of message payloads. Every rule reports the field it concerns, and
//! all bad fields are reported at once.

use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Channel, NewMessage};

pub const MAX_PHONE_BODY_CHARS: usize = 1600;
pub const MAX_ATTACHMENTS: usize = 10;
const MAX_PROVIDER_ID_LEN: usize = 256;
const MAX_EMAIL_LEN: usize = 254;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Validates a `POST /messages/outbound` body.
pub fn validate_outbound(payload: &Map<String, Value>) -> Result<NewMessage, Vec<FieldError>> {
    Validator::new(payload).finish(None)
}

/// Validates a `POST /messages/inbound` body (requires `messaging_provider_id`).
pub fn validate_inbound(payload: &Map<String, Value>) -> Result<NewMessage, Vec<FieldError>> {
    let mut v = Validator::new(payload);
    let provider_id = v.required_str("messaging_provider_id").and_then(|id| {
        if id.trim().is_empty() {
            v.error("messaging_provider_id", "must not be empty");
            None
        } else if id.len() > MAX_PROVIDER_ID_LEN {
            v.error(
                "messaging_provider_id",
                format!("must be at most {MAX_PROVIDER_ID_LEN} characters"),
            );
            None
        } else {
            Some(id.to_owned())
        }
    });
    v.finish(provider_id)
}

struct Validator<'a> {
    payload: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> Validator<'a> {
    fn new(payload: &'a Map<String, Value>) -> Self {
        Self {
            payload,
            errors: Vec::new(),
        }
    }

    fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    fn required_str(&mut self, field: &str) -> Option<&'a str> {
        match self.payload.get(field) {
            None | Some(Value::Null) => {
                self.error(field, "is required");
                None
            }
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => {
                self.error(field, "must be a string");
                None
            }
        }
    }

    fn finish(
        mut self,
        messaging_provider_id: Option<String>,
    ) -> Result<NewMessage, Vec<FieldError>> {
        let channel = self.required_str("type").and_then(|t| {
            let channel = Channel::parse(t);
            if channel.is_none() {
                self.error("type", "must be one of sms, mms, email");
            }
            channel
        });
        let from = self.address("from", channel);
        let to = self.address("to", channel);
        let attachments = self.attachments(channel);
        let body = self.body(channel, attachments.as_ref());
        let timestamp = self.timestamp();

        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        match (channel, from, to, body, attachments) {
            (Some(channel), Some(from), Some(to), Some(body), Some(attachments)) => {
                Ok(NewMessage {
                    channel,
                    from,
                    to,
                    body,
                    attachments,
                    timestamp,
                    messaging_provider_id,
                })
            }
            // Every `None` above recorded an error, so this is unreachable in practice;
            // answer with a generic error rather than panic.
            _ => Err(vec![FieldError::new("body", "invalid message")]),
        }
    }

    fn address(&mut self, field: &str, channel: Option<Channel>) -> Option<String> {
        let value = self.required_str(field)?;
        match channel {
            Some(c) if c.is_phone() => {
                if is_e164(value) {
                    Some(value.to_owned())
                } else {
                    self.error(
                        field,
                        "must be an E.164 phone number (+ followed by 8 to 15 digits)",
                    );
                    None
                }
            }
            Some(_) => {
                let trimmed = value.trim();
                if is_email(trimmed) {
                    Some(trimmed.to_owned())
                } else {
                    self.error(field, "must be a valid email address");
                    None
                }
            }
            // The type is invalid: the address can't be judged, only its presence.
            None => Some(value.to_owned()),
        }
    }

    /// `Some(None)` for a valid absent/null list, `None` when invalid.
    fn attachments(&mut self, channel: Option<Channel>) -> Option<Option<Vec<String>>> {
        const FIELD: &str = "attachments";
        let list = match self.payload.get(FIELD) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(items),
            Some(_) => {
                self.error(FIELD, "must be null or a list of URLs");
                return None;
            }
        };
        let count = list.map_or(0, Vec::len);
        let mut valid = true;
        if count > MAX_ATTACHMENTS {
            self.error(FIELD, format!("must hold at most {MAX_ATTACHMENTS} URLs"));
            valid = false;
        }
        match channel {
            Some(Channel::Sms) if count > 0 => {
                self.error(
                    FIELD,
                    "sms messages cannot carry attachments; send them with type mms",
                );
                valid = false;
            }
            Some(Channel::Mms) if count == 0 => {
                self.error(FIELD, "mms messages need at least one attachment URL");
                valid = false;
            }
            _ => {}
        }
        let mut urls = Vec::with_capacity(count);
        for (i, item) in list.into_iter().flatten().enumerate() {
            match item.as_str() {
                Some(s) if is_http_url(s) => urls.push(s.to_owned()),
                _ => {
                    self.error(&format!("{FIELD}[{i}]"), "must be an http(s) URL");
                    valid = false;
                }
            }
        }
        valid.then(|| list.map(|_| urls))
    }

    fn body(
        &mut self,
        channel: Option<Channel>,
        attachments: Option<&Option<Vec<String>>>,
    ) -> Option<String> {
        let body = self.required_str("body")?;
        let has_attachments = attachments
            .and_then(Option::as_ref)
            .is_some_and(|a| !a.is_empty());
        if body.trim().is_empty() && !(channel == Some(Channel::Mms) && has_attachments) {
            self.error("body", "must not be empty");
            return None;
        }
        if channel.is_some_and(Channel::is_phone) && body.chars().count() > MAX_PHONE_BODY_CHARS {
            self.error(
                "body",
                format!("must be at most {MAX_PHONE_BODY_CHARS} characters for sms and mms"),
            );
            return None;
        }
        Some(body.to_owned())
    }

    fn timestamp(&mut self) -> Option<OffsetDateTime> {
        match self.payload.get("timestamp") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => match OffsetDateTime::parse(s, &Rfc3339) {
                Ok(t) => Some(t.to_offset(time::UtcOffset::UTC)),
                Err(_) => {
                    self.error(
                        "timestamp",
                        "must be an RFC 3339 date-time, e.g. 2024-11-01T14:00:00Z",
                    );
                    None
                }
            },
            Some(_) => {
                self.error("timestamp", "must be an RFC 3339 date-time string");
                None
            }
        }
    }
}

/// `+` followed by 8 to 15 digits.
pub fn is_e164(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|digits| {
        (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

pub fn is_email(s: &str) -> bool {
    s.len() <= MAX_EMAIL_LEN
        && s.parse::<email_address::EmailAddress>()
            .is_ok_and(|addr| addr.as_str() == s && addr.domain().contains('.'))
}

fn is_http_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payload(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("test payload is an object")
    }

    fn sms() -> Value {
        json!({"from": "+18045551234", "to": "+12016661234", "type": "sms", "body": "hi",
               "attachments": null, "timestamp": "2024-11-01T14:00:00Z"})
    }

    fn mms() -> Value {
        json!({"from": "+18045551234", "to": "+12016661234", "type": "mms", "body": "look",
               "attachments": ["https://example.com/a.png"]})
    }

    fn email() -> Value {
        json!({"from": "user@usehatchapp.com", "to": "contact@example.com", "type": "email",
               "body": "Hello world!", "attachments": [], "timestamp": "2024-11-01T14:00:00Z"})
    }

    fn with(mut base: Value, key: &str, value: Value) -> Map<String, Value> {
        base[key] = value;
        payload(base)
    }

    fn without(mut base: Value, key: &str) -> Map<String, Value> {
        base.as_object_mut().unwrap().remove(key);
        payload(base)
    }

    fn fields(result: Result<NewMessage, Vec<FieldError>>) -> Vec<String> {
        result
            .expect_err("expected validation errors")
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn valid_examples_pass() {
        let m = validate_outbound(&payload(sms())).unwrap();
        assert_eq!(m.channel, Channel::Sms);
        assert_eq!(m.attachments, None);
        assert_eq!(m.timestamp.unwrap().unix_timestamp(), 1_730_469_600);
        let m = validate_outbound(&payload(mms())).unwrap();
        assert_eq!(m.attachments.unwrap().len(), 1);
        let m = validate_outbound(&payload(email())).unwrap();
        assert_eq!(m.attachments, Some(vec![]));
    }

    #[test]
    fn required_fields() {
        for field in ["from", "to", "type", "body"] {
            assert_eq!(
                fields(validate_outbound(&without(sms(), field))),
                vec![field]
            );
            assert_eq!(
                fields(validate_outbound(&with(sms(), field, Value::Null))),
                vec![field]
            );
        }
    }

    #[test]
    fn fields_must_have_the_right_json_type() {
        assert_eq!(
            fields(validate_outbound(&with(sms(), "body", json!(5)))),
            vec!["body"]
        );
        assert_eq!(
            fields(validate_outbound(&with(
                sms(),
                "to",
                json!(["+12016661234"])
            ))),
            vec!["to"]
        );
        assert_eq!(
            fields(validate_outbound(&with(sms(), "attachments", json!("x")))),
            vec!["attachments"]
        );
        assert_eq!(
            fields(validate_outbound(&with(sms(), "timestamp", json!(17)))),
            vec!["timestamp"]
        );
    }

    #[test]
    fn every_bad_field_is_reported() {
        let bad = json!({"from": "nope", "to": 5, "type": "sms", "body": ""});
        assert_eq!(
            fields(validate_outbound(&payload(bad))),
            vec!["from", "to", "body"]
        );
    }

    #[test]
    fn type_must_be_known() {
        assert_eq!(
            fields(validate_outbound(&with(sms(), "type", json!("fax")))),
            vec!["type"]
        );
        assert_eq!(
            fields(validate_outbound(&with(sms(), "type", json!("SMS")))),
            vec!["type"]
        );
    }

    #[test]
    fn phone_numbers_are_e164() {
        for good in ["+12345678", "+123456789012345", "+18045551234"] {
            assert!(is_e164(good), "{good}");
        }
        for bad in [
            "18045551234",
            "+1234567",
            "+1234567890123456",
            "+1804555123a",
            "+",
            "",
            " +18045551234",
        ] {
            assert!(!is_e164(bad), "{bad}");
            assert_eq!(
                fields(validate_outbound(&with(sms(), "to", json!(bad)))),
                vec!["to"]
            );
        }
        // An email address is not a phone number.
        assert_eq!(
            fields(validate_outbound(&with(mms(), "from", json!("a@b.com")))),
            vec!["from"]
        );
    }

    #[test]
    fn email_addresses_are_checked() {
        for bad in [
            "contact",
            "contact@",
            "@example.com",
            "+12016661234",
            "a b@example.com",
            "a@localhost",
        ] {
            assert_eq!(
                fields(validate_outbound(&with(email(), "to", json!(bad)))),
                vec!["to"],
                "{bad}"
            );
        }
        assert!(
            validate_outbound(&with(
                email(),
                "to",
                json!("First.Last+tag@sub.example.co.uk")
            ))
            .is_ok()
        );
    }

    #[test]
    fn body_must_not_be_empty() {
        assert_eq!(
            fields(validate_outbound(&with(sms(), "body", json!("")))),
            vec!["body"]
        );
        assert_eq!(
            fields(validate_outbound(&with(email(), "body", json!("   ")))),
            vec!["body"]
        );
    }

    #[test]
    fn mms_with_attachments_may_have_an_empty_body() {
        assert!(validate_outbound(&with(mms(), "body", json!(""))).is_ok());
    }

    #[test]
    fn phone_bodies_are_limited_to_1600_characters() {
        let max = "é".repeat(MAX_PHONE_BODY_CHARS);
        assert!(
            validate_outbound(&with(sms(), "body", json!(max))).is_ok(),
            "characters, not bytes"
        );
        let long = "x".repeat(MAX_PHONE_BODY_CHARS + 1);
        assert_eq!(
            fields(validate_outbound(&with(sms(), "body", json!(long.clone())))),
            vec!["body"]
        );
        assert!(
            validate_outbound(&with(email(), "body", json!(long))).is_ok(),
            "email has no such limit"
        );
    }

    #[test]
    fn attachments_are_at_most_ten_http_urls() {
        let ten: Vec<String> = (0..10)
            .map(|i| format!("https://example.com/{i}.png"))
            .collect();
        assert!(validate_outbound(&with(mms(), "attachments", json!(ten))).is_ok());
        let eleven: Vec<String> = (0..11)
            .map(|i| format!("https://example.com/{i}.png"))
            .collect();
        assert_eq!(
            fields(validate_outbound(&with(
                mms(),
                "attachments",
                json!(eleven)
            ))),
            vec!["attachments"]
        );
        let bad = json!([
            "https://example.com/a.png",
            "ftp://example.com/b",
            7,
            "not a url"
        ]);
        assert_eq!(
            fields(validate_outbound(&with(mms(), "attachments", bad))),
            vec!["attachments[1]", "attachments[2]", "attachments[3]"]
        );
    }

    #[test]
    fn sms_with_attachments_is_rejected_with_a_hint() {
        let errors = validate_outbound(&with(
            sms(),
            "attachments",
            json!(["https://example.com/a.png"]),
        ))
        .expect_err("sms with attachments");
        assert_eq!(errors[0].field, "attachments");
        assert!(errors[0].message.contains("mms"), "{}", errors[0].message);
        assert!(validate_outbound(&with(sms(), "attachments", json!([]))).is_ok());
    }

    #[test]
    fn mms_needs_an_attachment() {
        assert_eq!(
            fields(validate_outbound(&with(mms(), "attachments", json!([])))),
            vec!["attachments"]
        );
        assert_eq!(
            fields(validate_outbound(&without(mms(), "attachments"))),
            vec!["attachments"]
        );
    }

    #[test]
    fn timestamps_are_rfc3339_and_optional() {
        assert!(validate_outbound(&without(sms(), "timestamp")).is_ok());
        let m = validate_outbound(&with(
            sms(),
            "timestamp",
            json!("2024-11-01T16:00:00+02:00"),
        ))
        .unwrap();
        assert_eq!(m.timestamp.unwrap().offset(), time::UtcOffset::UTC);
        for bad in ["2024-11-01", "yesterday", "2024-11-01 14:00:00"] {
            assert_eq!(
                fields(validate_outbound(&with(sms(), "timestamp", json!(bad)))),
                vec!["timestamp"]
            );
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert!(validate_outbound(&with(sms(), "priority", json!("high"))).is_ok());
    }

    #[test]
    fn inbound_requires_a_provider_id() {
        let inbound = || with(sms(), "messaging_provider_id", json!("abc123"));
        assert_eq!(
            validate_inbound(&inbound())
                .unwrap()
                .messaging_provider_id
                .as_deref(),
            Some("abc123")
        );
        assert_eq!(
            fields(validate_inbound(&payload(sms()))),
            vec!["messaging_provider_id"]
        );
        assert_eq!(
            fields(validate_inbound(&with(
                sms(),
                "messaging_provider_id",
                json!("")
            ))),
            vec!["messaging_provider_id"]
        );
        assert_eq!(
            fields(validate_inbound(&with(
                sms(),
                "messaging_provider_id",
                json!(42)
            ))),
            vec!["messaging_provider_id"]
        );
        // Outbound ignores it.
        assert_eq!(
            validate_outbound(&inbound()).unwrap().messaging_provider_id,
            None
        );
    }
}
