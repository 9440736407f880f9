//! SendGrid's webhooks: the signed Event Webhook (delivery events of the mail we
//! send) and Inbound Parse (mail received on our domain, as multipart/form-data).
//!
//! The Event Webhook is signed with ECDSA P-256 over SHA-256 of the
//! `X-Twilio-Email-Event-Webhook-Timestamp` header value followed by the raw body;
//! the signature header holds the base64 DER signature. Inbound Parse is not signed:
//! it is protected with HTTP Basic credentials in the configured URL.

use std::collections::BTreeMap;
use std::convert::Infallible;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::domain::validation::is_email;
use crate::domain::{
    Channel, FieldError, NewMessage, OptOutSignal, ProviderKind, ReportedOutcome, StatusReport,
};

pub const SIGNATURE_HEADER: &str = "x-twilio-email-event-webhook-signature";
pub const TIMESTAMP_HEADER: &str = "x-twilio-email-event-webhook-timestamp";

/// The longest `Message-ID` used as the provider id (the domain's limit).
const MAX_PROVIDER_ID_LEN: usize = 256;

/// The public key of a signed Event Webhook.
#[derive(Clone, Debug)]
pub struct EventWebhookKey(VerifyingKey);

impl EventWebhookKey {
    /// Reads the key as SendGrid shows it (base64 DER SubjectPublicKeyInfo), or as PEM
    /// (`-----BEGIN PUBLIC KEY-----`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let base64: String = if text.starts_with("-----BEGIN") {
            let mut lines = text.lines().map(str::trim);
            if lines.next() != Some("-----BEGIN PUBLIC KEY-----") {
                return Err("a PEM key must be a PUBLIC KEY".into());
            }
            let body: Vec<&str> = lines.take_while(|l| !l.starts_with("-----END")).collect();
            body.concat()
        } else {
            text.split_whitespace().collect()
        };
        if base64.is_empty() {
            return Err("the event webhook key is empty".into());
        }
        let der = STANDARD
            .decode(base64)
            .map_err(|e| format!("the event webhook key is not base64: {e}"))?;
        VerifyingKey::from_public_key_der(&der)
            .map(Self)
            .map_err(|e| format!("the event webhook key is not a P-256 public key: {e}"))
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the event webhook signature or timestamp header is missing")]
    Missing,
    #[error("the event webhook signature does not match the request")]
    Invalid,
    #[error("the event webhook timestamp is too far from the current time")]
    Stale,
}

/// Checks a signed Event Webhook request: the signature first, then that the
/// (signed) timestamp is within `tolerance` of `now`.
pub fn verify_event_signature(
    key: &EventWebhookKey,
    signature: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    now: OffsetDateTime,
    tolerance: std::time::Duration,
) -> Result<(), SignatureError> {
    fn present(value: Option<&str>) -> Option<&str> {
        value.map(str::trim).filter(|v| !v.is_empty())
    }
    let (Some(signature), Some(timestamp)) = (present(signature), present(timestamp)) else {
        return Err(SignatureError::Missing);
    };
    let der = STANDARD
        .decode(signature)
        .map_err(|_| SignatureError::Invalid)?;
    let signature = Signature::from_der(&der).map_err(|_| SignatureError::Invalid)?;
    let mut signed = Vec::with_capacity(timestamp.len() + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.extend_from_slice(body);
    key.0
        .verify(&signed, &signature)
        .map_err(|_| SignatureError::Invalid)?;

    let sent = timestamp
        .parse::<i64>()
        .ok()
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        .ok_or(SignatureError::Invalid)?;
    if (now - sent).unsigned_abs() > tolerance {
        return Err(SignatureError::Stale);
    }
    Ok(())
}

fn str_at<'v>(event: &'v Map<String, Value>, key: &str) -> Option<&'v str> {
    event
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// What an event means for the message.
fn event_outcome(event: &str) -> ReportedOutcome {
    match event {
        "delivered" => ReportedOutcome::Delivered,
        "bounce" | "dropped" => ReportedOutcome::Failed,
        // processed, deferred and the engagement events (open, click, spamreport,
        // unsubscribe, ...) do not change where the message stands.
        _ => ReportedOutcome::InProgress,
    }
}

/// `dropped` reasons that say the address itself must not be mailed.
const ADDRESS_DROP_REASONS: [&str; 3] = [
    "bounced address",
    "spam reporting address",
    "unsubscribed address",
];

/// Whether an event puts its recipient (`email`) on the suppression list: a
/// hard bounce (`type` `blocked` is a temporary refusal and does not), a drop
/// because of the address, a spam report or an unsubscribe.
fn opt_out(name: &str, event: &Map<String, Value>) -> Option<OptOutSignal> {
    let reason = str_at(event, "reason").or_else(|| str_at(event, "response"));
    let suppresses = match name {
        "bounce" => str_at(event, "type").is_none_or(|kind| kind == "bounce"),
        "dropped" => reason.is_some_and(|why| {
            let why = why.to_lowercase();
            ADDRESS_DROP_REASONS.iter().any(|r| why.contains(r))
        }),
        "spamreport" | "unsubscribe" | "group_unsubscribe" => true,
        _ => false,
    };
    let address = str_at(event, "email")?;
    suppresses.then(|| OptOutSignal {
        address: address.to_owned(),
        reason: match reason {
            Some(why) => format!("sendgrid {name}: {why}"),
            None => format!("sendgrid {name}"),
        },
    })
}

/// Reads an Event Webhook body: a JSON array of events.
pub fn parse_events(body: &[u8]) -> Result<Vec<StatusReport>, FieldError> {
    let not_array = || FieldError::new("body", "must be a JSON array of events");
    let events = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(events)) => events,
        _ => return Err(not_array()),
    };
    events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let event = event
                .as_object()
                .ok_or_else(|| FieldError::new(format!("body[{i}]"), "must be a JSON object"))?;
            let name = str_at(event, "event").ok_or_else(|| {
                FieldError::new(format!("body[{i}].event"), "must be a non-empty string")
            })?;
            let outcome = event_outcome(name);
            let detail = (outcome == ReportedOutcome::Failed).then(|| {
                let mut detail = name.to_owned();
                if let Some(kind) = str_at(event, "type") {
                    detail.push_str(&format!(" ({kind})"));
                }
                if let Some(why) = str_at(event, "reason").or_else(|| str_at(event, "response")) {
                    detail.push_str(&format!(": {why}"));
                }
                detail
            });
            // Custom arguments arrive at the top level; accept them nested too.
            let message_id = str_at(event, "message_id").or_else(|| {
                event
                    .get("custom_args")
                    .and_then(Value::as_object)
                    .and_then(|args| str_at(args, "message_id"))
            });
            Ok(StatusReport {
                provider: ProviderKind::SendGrid,
                provider_message_id: str_at(event, "sg_message_id")
                    .and_then(|id| id.split('.').next())
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned),
                message_id: message_id.map(str::to_owned),
                outcome,
                provider_status: name.to_owned(),
                detail,
                event_id: str_at(event, "sg_event_id").map(str::to_owned),
                opt_out: opt_out(name, event),
            })
        })
        .collect()
}

/// The text fields of an Inbound Parse post that we read.
const TEXT_FIELDS: [&str; 10] = [
    "from",
    "to",
    "subject",
    "text",
    "html",
    "headers",
    "attachment-info",
    "SPF",
    "dkim",
    "envelope",
];

/// An Inbound Parse post, read: the message, and whether its sender is
/// authenticated.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundMail {
    pub message: NewMessage,
    /// SPF passed for an envelope sender of the From address's domain, or a
    /// DKIM signature of that domain passed (SendGrid's verdicts, as posted).
    pub sender_verified: bool,
}

/// Whether `domain` and `from_domain` are the same or one is a subdomain of
/// the other (relaxed alignment, as DMARC has it).
fn aligned(domain: &str, from_domain: &str) -> bool {
    let domain = domain.trim().trim_start_matches('@').to_ascii_lowercase();
    // A bare top-level domain vouches for nobody.
    domain.contains('.')
        && (from_domain == domain
            || from_domain.ends_with(&format!(".{domain}"))
            || domain.ends_with(&format!(".{from_domain}")))
}

/// SendGrid's verdicts on the sender of a mail from `from` (an address):
/// `SPF` (`pass`, `fail`, `softfail`, `neutral`, `none`) for the envelope
/// sender in `envelope`, and `dkim` (`{@example.com : pass, @other.com : fail}`).
pub fn sender_verified(from: &str, spf: &str, dkim: &str, envelope: &str) -> bool {
    let Some((_, from_domain)) = from.rsplit_once('@') else {
        return false;
    };
    let from_domain = from_domain.to_ascii_lowercase();
    let envelope_from = serde_json::from_str::<Value>(envelope)
        .ok()
        .and_then(|e| e.get("from").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    let spf_ok = spf.trim().eq_ignore_ascii_case("pass")
        && envelope_from
            .rsplit_once('@')
            .is_some_and(|(_, d)| aligned(d, &from_domain));
    let dkim_ok = dkim
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .split(',')
        .filter_map(|entry| entry.split_once(':'))
        .any(|(domain, verdict)| {
            verdict.trim().eq_ignore_ascii_case("pass") && aligned(domain, &from_domain)
        });
    spf_ok || dkim_ok
}

/// Decodes a field in the charset SendGrid names for it (`charsets`): UTF-8 and
/// ASCII as such, ISO-8859-1 byte for byte, anything else as lossy UTF-8.
fn decode(bytes: &[u8], charset: Option<&str>) -> String {
    let latin1 = charset.is_some_and(|c| {
        matches!(
            c.trim().to_ascii_lowercase().as_str(),
            "iso-8859-1" | "iso8859-1" | "latin1" | "latin-1"
        )
    });
    if latin1 {
        bytes.iter().map(|&b| char::from(b)).collect()
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// Splits an address list at the commas outside quotes and angle brackets.
fn mailboxes(list: &str) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut angle, mut escaped) =
        (Vec::new(), 0, false, false, false);
    for (i, c) in list.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                parts.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&list[start..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

/// The address of the first mailbox of a list (`Jane <jane@example.com>` →
/// `jane@example.com`), lower-cased.
fn first_address(list: &str) -> Option<String> {
    let mailbox = *mailboxes(list).first()?;
    let address = match (mailbox.rfind('<'), mailbox.rfind('>')) {
        (Some(open), Some(close)) if open < close => &mailbox[open + 1..close],
        _ => mailbox,
    };
    let address = address.trim();
    (!address.is_empty()).then(|| address.to_lowercase())
}

/// The value of a header in a raw header block (continuation lines unfolded).
fn header_value(headers: &str, name: &str) -> Option<String> {
    let mut current: Option<String> = None;
    let mut found = None;
    for line in headers.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(value) = current.as_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if found.is_none() {
            found = current.take();
        }
        current = line
            .split_once(':')
            .filter(|(key, _)| key.trim().eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim().to_owned());
    }
    found
        .or(current)
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|v| !v.is_empty())
}

fn sha256_hex(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The most of each text field of an Inbound Parse post kept (the rest is read
/// and dropped): a message item must stay well within DynamoDB's 400 KB.
pub const MAX_INBOUND_FIELD_BYTES: usize = 128 * 1024;
/// The most attachment names kept, each cut at [`MAX_ATTACHMENT_NAME_CHARS`].
/// Their content is never kept.
pub const MAX_INBOUND_ATTACHMENTS: usize = 10;
const MAX_ATTACHMENT_NAME_CHARS: usize = 255;

/// Reads a part, keeping its first `cap` bytes and dropping the rest as it
/// streams by.
async fn read_capped(mut field: multer::Field<'_>, cap: usize) -> Result<Vec<u8>, multer::Error> {
    let mut kept = Vec::new();
    while let Some(chunk) = field.chunk().await? {
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..room.min(chunk.len())]);
    }
    Ok(kept)
}

/// Reads an Inbound Parse post (the default, parsed mode: `from`, `to`, `subject`,
/// `text`, `html`, `headers`, `attachment-info` and files `attachment1..N`).
/// Attachments' content is dropped, text fields are cut at
/// [`MAX_INBOUND_FIELD_BYTES`] and the attachment names at
/// [`MAX_INBOUND_ATTACHMENTS`], so any post API Gateway can deliver is stored.
pub async fn parse_inbound(
    content_type: &str,
    body: impl Into<Vec<u8>>,
) -> Result<InboundMail, Vec<FieldError>> {
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        vec![FieldError::new(
            "content-type",
            "must be multipart/form-data with a boundary",
        )]
    })?;
    let body: Vec<u8> = body.into();
    let stream = futures::stream::once(async move { Ok::<_, Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let malformed = |e: multer::Error| vec![FieldError::new("body", format!("malformed: {e}"))];

    let mut raw: BTreeMap<&'static str, Vec<u8>> = BTreeMap::new();
    let mut charsets: Map<String, Value> = Map::new();
    // Attachment number → file name, from the file parts.
    let mut files: BTreeMap<u32, String> = BTreeMap::new();
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or_default().to_owned();
        if let Some(n) = name
            .strip_prefix("attachment")
            .and_then(|n| n.parse::<u32>().ok())
        {
            let file_name = field.file_name().map(str::to_owned);
            read_capped(field, 0).await.map_err(malformed)?;
            files.insert(n, file_name.unwrap_or(name));
        } else if name == "charsets" {
            let bytes = read_capped(field, MAX_INBOUND_FIELD_BYTES)
                .await
                .map_err(malformed)?;
            if let Ok(Value::Object(map)) = serde_json::from_slice(&bytes) {
                charsets = map;
            }
        } else if let Some(known) = TEXT_FIELDS.iter().find(|f| **f == name) {
            let bytes = read_capped(field, MAX_INBOUND_FIELD_BYTES)
                .await
                .map_err(malformed)?;
            raw.entry(*known).or_insert(bytes);
        } else {
            read_capped(field, 0).await.map_err(malformed)?;
        }
    }
    let text = |name: &str| {
        raw.get(name)
            .map(|bytes| decode(bytes, charsets.get(name).and_then(Value::as_str)))
            .unwrap_or_default()
    };

    let mut errors = Vec::new();
    let mut address = |field: &str| {
        let value = text(field);
        match first_address(&value) {
            None => errors.push(FieldError::new(field, "is required")),
            Some(a) if !is_email(&a) => {
                errors.push(FieldError::new(field, "must be a valid email address"));
            }
            Some(a) => return Some(a),
        }
        None
    };
    let (from, to) = (address("from"), address("to"));

    // Attachment names: the file parts', else `attachment-info`'s, else the part name.
    let info: Map<String, Value> =
        serde_json::from_str(&text("attachment-info")).unwrap_or_default();
    for (key, details) in &info {
        let Some(n) = key
            .strip_prefix("attachment")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let named = ["filename", "name"]
            .iter()
            .find_map(|k| details.get(*k).and_then(Value::as_str))
            .filter(|s| !s.trim().is_empty())
            .map_or_else(|| key.clone(), str::to_owned);
        files.entry(n).or_insert(named);
    }
    let attachments: Vec<String> = files
        .into_values()
        .take(MAX_INBOUND_ATTACHMENTS)
        .map(|name| name.chars().take(MAX_ATTACHMENT_NAME_CHARS).collect())
        .collect();

    let (plain, html) = (text("text"), text("html"));
    let body = if plain.trim().is_empty() { html } else { plain };
    if body.trim().is_empty() && attachments.is_empty() {
        errors.push(FieldError::new("text", "must not be empty"));
    }

    match (from, to) {
        (Some(from), Some(to)) if errors.is_empty() => {
            let message_id = header_value(&text("headers"), "message-id")
                .filter(|id| id.len() <= MAX_PROVIDER_ID_LEN)
                .unwrap_or_else(|| {
                    let hash = sha256_hex(&[&from, &to, &text("subject"), &text("text")]);
                    format!("sha256:{hash}")
                });
            let verified = sender_verified(&from, &text("SPF"), &text("dkim"), &text("envelope"));
            Ok(InboundMail {
                message: NewMessage {
                    channel: Channel::Email,
                    from,
                    to,
                    body,
                    attachments: (!attachments.is_empty()).then_some(attachments),
                    timestamp: None,
                    messaging_provider_id: Some(message_id),
                },
                sender_verified: verified,
            })
        }
        _ => Err(errors),
    }
}

/// Whether an `Authorization` header carries exactly `user:password` as HTTP Basic
/// credentials, compared in constant time. An empty expectation matches nothing.
pub fn basic_auth_matches(authorization: Option<&str>, expected_user_colon_password: &str) -> bool {
    let given = authorization
        .map(str::trim)
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .and_then(|(_, credentials)| STANDARD.decode(credentials.trim()).ok());
    let Some(given) = given else {
        return false;
    };
    // Equal-length digests compared without an early exit: the time does not depend on
    // where (or whether) the credentials differ.
    let (a, b) = (
        Sha256::digest(&given),
        Sha256::digest(expected_user_colon_password.as_bytes()),
    );
    let difference = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    difference == 0 && !expected_user_colon_password.is_empty()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    // SendGrid's own test vector (sendgrid-python, test/unit/test_eventwebhook.py; the
    // same in sendgrid-nodejs and sendgrid-go).
    const PUBLIC_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g==";
    const SIGNATURE: &str = "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM=";
    const TIMESTAMP: &str = "1600112502";
    const PAYLOAD: &str = concat!(
        r#"[{"email":"hello@world.com","event":"dropped","reason":"Bounced Address","#,
        r#""sg_event_id":"ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA","#,
        r#""sg_message_id":"LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0","#,
        r#""smtp-id":"<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>","timestamp":1600112492}]"#,
        "\r\n"
    );
    /// Other values of the same test file: a valid key that did not sign, and a valid
    /// signature of something else.
    const OTHER_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWHw8REntlo7aNDthvj+y7GjUuFDb/R1NGe1OPzpA==";
    const OTHER_SIGNATURE: &str = "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH3j/0=";

    const TOLERANCE: Duration = Duration::from_secs(300);

    fn vector_time() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_600_112_502).expect("timestamp")
    }

    fn verify(
        key: &str,
        signature: Option<&str>,
        timestamp: Option<&str>,
        body: &str,
        now: OffsetDateTime,
    ) -> Result<(), SignatureError> {
        let key = EventWebhookKey::parse(key).expect("key");
        verify_event_signature(&key, signature, timestamp, body.as_bytes(), now, TOLERANCE)
    }

    #[test]
    fn sendgrids_published_signature_verifies() {
        let now = vector_time();
        assert_eq!(
            verify(PUBLIC_KEY, Some(SIGNATURE), Some(TIMESTAMP), PAYLOAD, now),
            Ok(())
        );
        // Within the tolerance on either side.
        for offset in [-300, 299] {
            let now = now + time::Duration::seconds(offset);
            assert_eq!(
                verify(PUBLIC_KEY, Some(SIGNATURE), Some(TIMESTAMP), PAYLOAD, now),
                Ok(())
            );
        }
    }

    /// SendGrid's signer does not normalize s: (r, s) and (r, n - s) must both verify.
    #[test]
    fn a_high_s_signature_verifies_like_its_low_s_twin() {
        let key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let public = EventWebhookKey(*key.verifying_key());
        let (timestamp, body) = ("1700000000", b"[]".as_slice());
        let signed = [timestamp.as_bytes(), body].concat();
        let low: Signature = p256::ecdsa::signature::Signer::sign(&key, &signed);
        let (r, s) = low.split_scalars();
        let high = Signature::from_scalars(r, -*s).unwrap();
        assert_ne!(high, low);
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        for signature in [low, high] {
            let encoded = STANDARD.encode(signature.to_der().as_bytes());
            assert_eq!(
                verify_event_signature(
                    &public,
                    Some(&encoded),
                    Some(timestamp),
                    body,
                    now,
                    Duration::from_secs(300)
                ),
                Ok(())
            );
        }
    }

    #[test]
    fn tampering_is_invalid() {
        let now = vector_time();
        let sig = Some(SIGNATURE);
        let tampered = PAYLOAD.replace("dropped", "delivered");
        assert_eq!(
            verify(PUBLIC_KEY, sig, Some(TIMESTAMP), &tampered, now),
            Err(SignatureError::Invalid)
        );
        let without_crlf = PAYLOAD.trim_end();
        assert_eq!(
            verify(PUBLIC_KEY, sig, Some(TIMESTAMP), without_crlf, now),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            verify(PUBLIC_KEY, sig, Some("1600112503"), PAYLOAD, now),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            verify(OTHER_KEY, sig, Some(TIMESTAMP), PAYLOAD, now),
            Err(SignatureError::Invalid)
        );
        let other = Some(OTHER_SIGNATURE);
        assert_eq!(
            verify(PUBLIC_KEY, other, Some(TIMESTAMP), PAYLOAD, now),
            Err(SignatureError::Invalid)
        );
        for garbage in ["not base64!", "AAAA", "MEUCIGHQ"] {
            assert_eq!(
                verify(PUBLIC_KEY, Some(garbage), Some(TIMESTAMP), PAYLOAD, now),
                Err(SignatureError::Invalid),
                "{garbage}"
            );
        }
        assert_eq!(
            verify(PUBLIC_KEY, sig, Some("timestamp"), PAYLOAD, now),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn missing_headers_are_missing() {
        let now = vector_time();
        for (sig, ts) in [
            (None, Some(TIMESTAMP)),
            (Some(SIGNATURE), None),
            (None, None),
            (Some(" "), Some(TIMESTAMP)),
            (Some(SIGNATURE), Some("")),
        ] {
            assert_eq!(
                verify(PUBLIC_KEY, sig, ts, PAYLOAD, now),
                Err(SignatureError::Missing)
            );
        }
    }

    #[test]
    fn old_or_future_timestamps_are_stale() {
        let sig = Some(SIGNATURE);
        let late = vector_time() + time::Duration::seconds(301);
        assert_eq!(
            verify(PUBLIC_KEY, sig, Some(TIMESTAMP), PAYLOAD, late),
            Err(SignatureError::Stale)
        );
        let early = vector_time() - time::Duration::hours(1);
        assert_eq!(
            verify(PUBLIC_KEY, sig, Some(TIMESTAMP), PAYLOAD, early),
            Err(SignatureError::Stale)
        );
        // A stale request with a bad signature is reported as invalid.
        assert_eq!(
            verify(PUBLIC_KEY, sig, Some(TIMESTAMP), "[]", late),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn keys_parse_as_base64_der_or_pem() {
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n{}\n-----END PUBLIC KEY-----\n",
            &PUBLIC_KEY[..64],
            &PUBLIC_KEY[64..]
        );
        let key = EventWebhookKey::parse(&pem).expect("pem");
        let body = PAYLOAD.as_bytes();
        let result = verify_event_signature(
            &key,
            Some(SIGNATURE),
            Some(TIMESTAMP),
            body,
            vector_time(),
            TOLERANCE,
        );
        assert_eq!(result, Ok(()));
        assert!(EventWebhookKey::parse(&format!("  {PUBLIC_KEY}\n")).is_ok());
        for bad in [
            "",
            "not base64!",
            "AAAA",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
        ] {
            assert!(EventWebhookKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_published_payload_is_a_dropped_message() {
        let reports = parse_events(PAYLOAD.as_bytes()).expect("events");
        assert_eq!(
            reports,
            vec![StatusReport {
                provider: ProviderKind::SendGrid,
                provider_message_id: Some("LRzXl_NHStOGhQ4kofSm_A".into()),
                message_id: None,
                outcome: ReportedOutcome::Failed,
                provider_status: "dropped".into(),
                detail: Some("dropped: Bounced Address".into()),
                event_id: Some("ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA".into()),
                opt_out: Some(OptOutSignal {
                    address: "hello@world.com".into(),
                    reason: "sendgrid dropped: Bounced Address".into(),
                }),
            }]
        );
    }

    #[test]
    fn hard_bounces_spam_reports_and_unsubscribes_are_opt_out_signals() {
        let body = serde_json::json!([
            {"event": "bounce", "email": "hard@example.com", "type": "bounce", "reason": "550 no such user"},
            {"event": "bounce", "email": "legacy@example.com"},
            {"event": "bounce", "email": "soft@example.com", "type": "blocked", "reason": "421 try later"},
            {"event": "dropped", "email": "dropped@example.com", "reason": "Spam Reporting Address"},
            {"event": "dropped", "email": "content@example.com", "reason": "Spam Content"},
            {"event": "spamreport", "email": "spam@example.com"},
            {"event": "unsubscribe", "email": "unsub@example.com"},
            {"event": "group_unsubscribe", "email": "group@example.com", "asm_group_id": 1},
            {"event": "delivered", "email": "fine@example.com"},
            {"event": "spamreport"},
        ]);
        let signals: Vec<_> = parse_events(body.to_string().as_bytes())
            .expect("events")
            .into_iter()
            .map(|r| r.opt_out.map(|s| s.address))
            .collect();
        let some = |a: &str| Some(a.to_owned());
        assert_eq!(
            signals,
            [
                some("hard@example.com"),
                some("legacy@example.com"),
                None,
                some("dropped@example.com"),
                None,
                some("spam@example.com"),
                some("unsub@example.com"),
                some("group@example.com"),
                None,
                None,
            ]
        );
    }

    #[test]
    fn events_map_to_outcomes() {
        let body = serde_json::json!([
            {"event": "processed", "sg_event_id": "e1", "sg_message_id": "m1.filter0001.1.0",
             "email": "a@example.com", "timestamp": 1, "message_id": "ours-1"},
            {"event": "deferred", "sg_event_id": "e2", "sg_message_id": "m1.x",
             "response": "400 try again later", "custom_args": {"message_id": "ours-2"}},
            {"event": "delivered", "sg_event_id": "e3", "sg_message_id": "m1.x",
             "response": "250 OK"},
            {"event": "bounce", "sg_event_id": "e4", "sg_message_id": "m2", "type": "blocked",
             "reason": "550 5.1.1 no such user", "status": "5.1.1"},
            {"event": "bounce", "sg_event_id": "e5", "response": "550 rejected"},
            {"event": "open", "sg_event_id": "e6"},
            {"event": "click", "sg_event_id": "e7", "url": "https://example.com"},
        ]);
        let reports = parse_events(body.to_string().as_bytes()).expect("events");
        let summary: Vec<_> = reports
            .iter()
            .map(|r| {
                (
                    r.provider_status.as_str(),
                    r.outcome,
                    r.provider_message_id.as_deref(),
                    r.message_id.as_deref(),
                    r.detail.as_deref(),
                    r.event_id.as_deref(),
                )
            })
            .collect();
        use ReportedOutcome::*;
        assert_eq!(
            summary,
            [
                (
                    "processed",
                    InProgress,
                    Some("m1"),
                    Some("ours-1"),
                    None,
                    Some("e1")
                ),
                (
                    "deferred",
                    InProgress,
                    Some("m1"),
                    Some("ours-2"),
                    None,
                    Some("e2")
                ),
                ("delivered", Delivered, Some("m1"), None, None, Some("e3")),
                (
                    "bounce",
                    Failed,
                    Some("m2"),
                    None,
                    Some("bounce (blocked): 550 5.1.1 no such user"),
                    Some("e4")
                ),
                (
                    "bounce",
                    Failed,
                    None,
                    None,
                    Some("bounce: 550 rejected"),
                    Some("e5")
                ),
                ("open", InProgress, None, None, None, Some("e6")),
                ("click", InProgress, None, None, None, Some("e7")),
            ]
        );
        assert!(reports.iter().all(|r| r.provider == ProviderKind::SendGrid));
        assert_eq!(parse_events(b"[]"), Ok(vec![]));
    }

    #[test]
    fn malformed_event_bodies_are_refused() {
        for body in [&b"{}"[..], b"not json", b"", b"\"[]\""] {
            let error = parse_events(body).expect_err("not an array");
            assert_eq!(error.field, "body");
        }
        let error = parse_events(br#"[{"event":"delivered"}, 5]"#).expect_err("not an object");
        assert_eq!(error.field, "body[1]");
        let error = parse_events(br#"[{"sg_event_id":"x"}]"#).expect_err("no event");
        assert_eq!(error.field, "body[0].event");
    }

    const BOUNDARY: &str = "xYzZY";

    fn multipart(parts: &[(&str, Option<&str>, &str)]) -> Vec<u8> {
        let mut body = String::new();
        for (name, file_name, value) in parts {
            body.push_str(&format!("--{BOUNDARY}\r\n"));
            match file_name {
                Some(file) => body.push_str(&format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\n\
                     Content-Type: text/plain\r\n\r\n"
                )),
                None => body.push_str(&format!(
                    "Content-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                )),
            }
            body.push_str(value);
            body.push_str("\r\n");
        }
        body.push_str(&format!("--{BOUNDARY}--\r\n"));
        body.into_bytes()
    }

    fn content_type() -> String {
        format!("multipart/form-data; boundary={BOUNDARY}")
    }

    const HEADERS: &str = "Received: by mx.sendgrid.net with SMTP id abc\n\
        Message-ID:\n <CAF=abc123@mail.example.com>\n\
        From: Jane Doe <Jane@Example.com>\n\
        Subject: Hello\n";

    fn inbound_parts() -> Vec<(&'static str, Option<&'static str>, &'static str)> {
        vec![
            ("headers", None, HEADERS),
            ("dkim", None, "{@example.com : pass}"),
            (
                "to",
                None,
                "\"Support, Team\" <Support@ourapp.example>, other@ourapp.example",
            ),
            ("from", None, "Jane Doe <Jane@Example.com>"),
            ("text", None, "Hi there,\r\nsee attached."),
            ("html", None, "<p>Hi there, see attached.</p>"),
            ("sender_ip", None, "192.0.2.1"),
            (
                "envelope",
                None,
                r#"{"to":["support@ourapp.example"],"from":"jane@example.com"}"#,
            ),
            ("attachments", None, "1"),
            ("subject", None, "Hello"),
            (
                "attachment-info",
                None,
                r#"{"attachment1":{"filename":"notes.txt","name":"notes.txt","type":"text/plain"}}"#,
            ),
            ("attachment1", Some("notes.txt"), "some notes"),
            (
                "charsets",
                None,
                r#"{"to":"UTF-8","text":"UTF-8","subject":"UTF-8","from":"UTF-8"}"#,
            ),
            ("SPF", None, "pass"),
        ]
    }

    #[tokio::test]
    async fn inbound_parse_posts_are_read() {
        let body = multipart(&inbound_parts());
        let message = parse_inbound(&content_type(), body)
            .await
            .expect("valid")
            .message;
        assert_eq!(
            message,
            NewMessage {
                channel: Channel::Email,
                from: "jane@example.com".into(),
                to: "support@ourapp.example".into(),
                body: "Hi there,\r\nsee attached.".into(),
                attachments: Some(vec!["notes.txt".into()]),
                timestamp: None,
                messaging_provider_id: Some("<CAF=abc123@mail.example.com>".into()),
            }
        );
    }

    #[tokio::test]
    async fn a_big_inbound_mail_is_cut_to_fit_and_its_attachments_dropped() {
        let big_text = "x".repeat(3 * MAX_INBOUND_FIELD_BYTES);
        let big_file = "y".repeat(2 * 1024 * 1024);
        let names: Vec<String> = (1..=15).map(|n| format!("attachment{n}")).collect();
        let files: Vec<String> = (1..=15).map(|n| format!("file-{n}.bin")).collect();
        let mut parts: Vec<(&str, Option<&str>, &str)> = vec![
            ("from", None, "a@example.com"),
            ("to", None, "b@example.com"),
            ("text", None, big_text.as_str()),
        ];
        for (name, file) in names.iter().zip(&files) {
            parts.push((name, Some(file.as_str()), big_file.as_str()));
        }
        let body = multipart(&parts);
        assert!(body.len() > 30 * 1024 * 1024);
        let message = parse_inbound(&content_type(), body)
            .await
            .expect("valid")
            .message;
        assert_eq!(message.body.len(), MAX_INBOUND_FIELD_BYTES);
        let attachments = message.attachments.expect("names");
        assert_eq!(attachments.len(), MAX_INBOUND_ATTACHMENTS);
        assert_eq!(attachments[0], "file-1.bin");
    }

    #[tokio::test]
    async fn inbound_parse_records_whether_spf_or_dkim_vouched_for_the_sender() {
        let mail = parse_inbound(&content_type(), multipart(&inbound_parts()))
            .await
            .expect("valid");
        assert!(mail.sender_verified, "DKIM passed for example.com");
        let forged: Vec<_> = inbound_parts()
            .into_iter()
            .map(|(name, file, value)| match name {
                "dkim" => (name, file, "{@example.com : fail}"),
                "SPF" => (name, file, "softfail"),
                _ => (name, file, value),
            })
            .collect();
        let mail = parse_inbound(&content_type(), multipart(&forged))
            .await
            .expect("valid");
        assert!(!mail.sender_verified, "neither check passed");
    }

    #[test]
    fn a_verdict_counts_only_for_the_from_domain() {
        let envelope = r#"{"to":["support@ourapp.example"],"from":"bounce@mail.example.com"}"#;
        assert!(
            sender_verified("jane@example.com", "pass", "", envelope),
            "SPF, relaxed"
        );
        assert!(!sender_verified(
            "jane@example.com",
            "pass",
            "",
            r#"{"from":"x@evil.test"}"#
        ));
        assert!(sender_verified(
            "jane@example.com",
            "none",
            "{@example.com : pass}",
            "{}"
        ));
        assert!(!sender_verified(
            "jane@example.com",
            "fail",
            "{@evil.test : pass, @example.com : fail}",
            envelope
        ));
        assert!(!sender_verified("jane@example.com", "", "", ""));
        assert!(!sender_verified(
            "jane@example.com",
            "pass",
            "{@ample.com : pass}",
            "{}"
        ));
    }

    #[tokio::test]
    async fn inbound_parse_falls_back_to_html_and_a_content_hash() {
        let keep = ["to", "from", "subject", "html"];
        let parts: Vec<_> = inbound_parts()
            .into_iter()
            .filter(|(name, ..)| keep.contains(name))
            .chain([("text", None, "  ")])
            .collect();
        let message = parse_inbound(&content_type(), multipart(&parts))
            .await
            .expect("valid")
            .message;
        assert_eq!(message.body, "<p>Hi there, see attached.</p>");
        assert_eq!(message.attachments, None);
        let id = message.messaging_provider_id.expect("id");
        assert!(id.starts_with("sha256:") && id.len() == 7 + 64, "{id}");
        // The same mail gets the same id.
        let again = parse_inbound(&content_type(), multipart(&parts))
            .await
            .expect("valid")
            .message;
        assert_eq!(again.messaging_provider_id.as_deref(), Some(id.as_str()));
    }

    #[tokio::test]
    async fn inbound_parse_decodes_latin1_fields() {
        let mut body = multipart(&[
            ("from", None, "a@example.com"),
            ("to", None, "b@example.com"),
            ("charsets", None, r#"{"text":"iso-8859-1"}"#),
        ]);
        // Append a text part in ISO-8859-1 ("café") before the closing boundary.
        let end = body.len() - format!("--{BOUNDARY}--\r\n").len();
        let tail = body.split_off(end);
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(b"caf\xe9\r\n");
        body.extend_from_slice(&tail);
        let message = parse_inbound(&content_type(), body)
            .await
            .expect("valid")
            .message;
        assert_eq!(message.body, "café");
    }

    #[tokio::test]
    async fn inbound_parse_errors() {
        let parts = [
            ("from", None, "Jane <not-an-address>"),
            ("subject", None, "Hello"),
            ("text", None, ""),
        ];
        let errors = parse_inbound(&content_type(), multipart(&parts))
            .await
            .expect_err("invalid");
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["from", "to", "text"]);

        let errors = parse_inbound("application/json", b"{}".to_vec())
            .await
            .expect_err("not multipart");
        assert_eq!(errors[0].field, "content-type");
        let errors = parse_inbound(&content_type(), &b"--xYzZY\r\ngarbage"[..])
            .await
            .expect_err("malformed");
        assert_eq!(errors[0].field, "body");
    }

    #[test]
    fn addresses_and_headers() {
        assert_eq!(
            first_address("\"Doe, Jane\" <Jane@Example.com>, x@y.com").as_deref(),
            Some("jane@example.com")
        );
        assert_eq!(first_address(" b@c.com ").as_deref(), Some("b@c.com"));
        assert_eq!(first_address(" , "), None);
        assert_eq!(
            header_value("message-id: <a@b>\r\nX: y", "Message-ID").as_deref(),
            Some("<a@b>")
        );
        assert_eq!(header_value("Subject: x", "Message-ID"), None);
    }

    #[test]
    fn basic_auth() {
        let header = format!("Basic {}", STANDARD.encode("sendgrid:s3cret"));
        assert!(basic_auth_matches(Some(&header), "sendgrid:s3cret"));
        let lower = format!("basic  {}", STANDARD.encode("sendgrid:s3cret"));
        assert!(basic_auth_matches(Some(&lower), "sendgrid:s3cret"));
        assert!(!basic_auth_matches(Some(&header), "sendgrid:other"));
        assert!(!basic_auth_matches(Some(&header), "sendgrid:s3cret2"));
        assert!(!basic_auth_matches(Some(&header), ""));
        let bearer = format!("Bearer {}", STANDARD.encode("sendgrid:s3cret"));
        for garbage in [
            None,
            Some(""),
            Some("Basic"),
            Some("Basic not-base64!"),
            Some(bearer.as_str()),
            Some("sendgrid:s3cret"),
        ] {
            assert!(
                !basic_auth_matches(garbage, "sendgrid:s3cret"),
                "{garbage:?}"
            );
        }
        let empty = format!("Basic {}", STANDARD.encode(""));
        assert!(!basic_auth_matches(Some(&empty), ""));
    }
}
