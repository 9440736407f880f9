//! Signed callbacks after accepted sends, as the real providers make them: Twilio
//! status callbacks (form posts signed with `X-Twilio-Signature`) and SendGrid Event
//! Webhook posts (JSON arrays signed with ECDSA P-256).
//!
//! They are best effort: sent from their own task after the send was answered,
//! failures logged and recorded, never retried.

use std::time::Duration;

use anyhow::{Context, anyhow};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::DecodePrivateKey as _;
use serde::Serialize;
use serde_json::{Map, Value, json};
use shared::adapters::{sendgrid_webhook, twilio_webhook};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{AppState, lock};

/// The development signing key of the simulated SendGrid Event Webhook (base64 PKCS#8
/// DER of a P-256 private key). Not a secret: it signs only simulator traffic.
pub const DEV_SENDGRID_SIGNING_KEY: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQga+aiUdkPqMlfhp5mAKVLFTT4PIw8I0N+xrHarqfZ84ehRANCAAT+lpjpofaSNzEUn2vHjYlBV1/Gqe4DkjgUUe882TIrp4H7wu8uvcpHOzKR7SDvkPZuCbryRrsbvmUV7BOoQ3Ho";

/// The public half of [`DEV_SENDGRID_SIGNING_KEY`], as SendGrid shows a verification
/// key (base64 DER SubjectPublicKeyInfo).
pub const DEV_SENDGRID_PUBLIC_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE/paY6aH2kjcxFJ9rx42JQVdfxqnuA5I4FFHvPNkyK6eB+8LvLr3KRzsyke0g75D2bgm68ka7G75lFewTqENx6A==";

/// The error code Twilio reports for an undelivered message ("Unreachable destination
/// handset").
pub const UNDELIVERED_ERROR_CODE: &str = "30003";

/// Reads a P-256 signing key: base64 PKCS#8 DER, PEM (`-----BEGIN PRIVATE KEY-----`) or
/// the 32-byte secret scalar in hex.
pub fn parse_signing_key(text: &str) -> anyhow::Result<SigningKey> {
    let text = text.trim();
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
            .collect::<Result<_, _>>()?;
        return SigningKey::from_slice(&bytes).map_err(|e| anyhow!("invalid P-256 scalar: {e}"));
    }
    let base64: String = if text.starts_with("-----BEGIN PRIVATE KEY-----") {
        text.lines()
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .collect::<Vec<_>>()
            .concat()
    } else {
        text.split_whitespace().collect()
    };
    let der = STANDARD
        .decode(base64)
        .context("the signing key is neither hex, PEM nor base64")?;
    SigningKey::from_pkcs8_der(&der).map_err(|e| anyhow!("not a P-256 PKCS#8 private key: {e}"))
}

/// [`DEV_SENDGRID_SIGNING_KEY`], parsed.
pub(crate) fn dev_signing_key() -> SigningKey {
    parse_signing_key(DEV_SENDGRID_SIGNING_KEY).expect("the development key is valid (tested)")
}

/// The `X-Twilio-Email-Event-Webhook-Signature` for `body` sent at `timestamp`.
pub fn sign_sendgrid_events(key: &SigningKey, timestamp: &str, body: &[u8]) -> String {
    let mut signed = Vec::with_capacity(timestamp.len() + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.extend_from_slice(body);
    let signature: Signature = key.sign(&signed);
    STANDARD.encode(signature.to_der().as_bytes())
}

/// One callback made, as shown by `GET /_sim/callbacks`.
#[derive(Debug, Clone, Serialize)]
pub struct CallbackRecord {
    pub seq: u64,
    /// `twilio_status` or `sendgrid_events`.
    pub kind: &'static str,
    pub url: String,
    pub provider_message_id: String,
    /// The `MessageStatus`, or the events' names.
    pub statuses: Vec<String>,
    /// The HTTP status the receiver answered; `None` when no answer came.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub sent_at: String,
}

#[derive(Default)]
pub(crate) struct CallbackLog {
    next_seq: u64,
    pub(crate) records: Vec<CallbackRecord>,
}

/// The callbacks due after an accepted send; settled when the send is accepted.
pub(crate) enum Callbacks {
    Twilio {
        url: String,
        sid: String,
        account_sid: String,
        from: String,
        to: String,
        undelivered: bool,
        delay: Duration,
    },
    SendGrid {
        url: String,
        message_id: String,
        email: String,
        custom_args: Map<String, Value>,
        bounce: bool,
        delay: Duration,
    },
}

impl Callbacks {
    /// Sends the callbacks from their own task.
    pub(crate) fn spawn(self, state: AppState) {
        tokio::spawn(async move {
            match self {
                Self::Twilio {
                    url,
                    sid,
                    account_sid,
                    from,
                    to,
                    undelivered,
                    delay,
                } => {
                    let last = if undelivered {
                        "undelivered"
                    } else {
                        "delivered"
                    };
                    for status in ["sent", last] {
                        tokio::time::sleep(delay).await;
                        let mut params: Vec<(String, String)> = [
                            ("MessageSid", sid.as_str()),
                            ("SmsSid", &sid),
                            ("AccountSid", &account_sid),
                            ("From", &from),
                            ("To", &to),
                            ("MessageStatus", status),
                            ("SmsStatus", status),
                            ("ApiVersion", "2010-04-01"),
                        ]
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .into();
                        if status == "undelivered" {
                            params.push(("ErrorCode".into(), UNDELIVERED_ERROR_CODE.into()));
                        }
                        let token = &state.secrets().twilio_auth_token;
                        let signature = twilio_webhook::signature(token, &url, &params);
                        let request = state
                            .http()
                            .post(&url)
                            .header("user-agent", "TwilioProxy/1.1")
                            .header(twilio_webhook::SIGNATURE_HEADER, signature)
                            .form(&params);
                        let statuses = vec![status.to_owned()];
                        send(&state, "twilio_status", &url, &sid, statuses, request).await;
                    }
                }
                Self::SendGrid {
                    url,
                    message_id,
                    email,
                    custom_args,
                    bounce,
                    delay,
                } => {
                    let last = if bounce { "bounce" } else { "delivered" };
                    for name in ["processed", last] {
                        tokio::time::sleep(delay).await;
                        let event = sendgrid_event(name, &message_id, &email, &custom_args);
                        let body = serde_json::to_vec(&[event]).unwrap_or_default();
                        let timestamp = OffsetDateTime::now_utc().unix_timestamp().to_string();
                        let key = &state.config().sendgrid_signing_key;
                        let signature = sign_sendgrid_events(key, &timestamp, &body);
                        let request = state
                            .http()
                            .post(&url)
                            .header("user-agent", "SendGrid Event API")
                            .header("content-type", "application/json")
                            .header(sendgrid_webhook::SIGNATURE_HEADER, signature)
                            .header(sendgrid_webhook::TIMESTAMP_HEADER, timestamp)
                            .body(body);
                        let statuses = vec![name.to_owned()];
                        send(
                            &state,
                            "sendgrid_events",
                            &url,
                            &message_id,
                            statuses,
                            request,
                        )
                        .await;
                    }
                }
            }
        });
    }
}

/// One SendGrid event about the message `message_id` (its `X-Message-Id`).
fn sendgrid_event(
    name: &str,
    message_id: &str,
    email: &str,
    custom_args: &Map<String, Value>,
) -> Value {
    let mut event = json!({
        "email": email,
        "timestamp": OffsetDateTime::now_utc().unix_timestamp(),
        "event": name,
        "sg_event_id": URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>()),
        "sg_message_id": format!("{message_id}.filter0001.1.0"),
        "smtp-id": format!("<{message_id}@provider-sim.local>"),
    });
    match name {
        "delivered" => {
            event["response"] = "250 2.0.0 OK accepted".into();
            event["ip"] = "127.0.0.1".into();
            event["tls"] = 1.into();
        }
        "bounce" => {
            event["type"] = "bounce".into();
            event["status"] = "5.1.1".into();
            event["reason"] =
                "550 5.1.1 The email account that you tried to reach does not exist.".into();
        }
        _ => {}
    }
    // Custom arguments travel at the top level of each event, as SendGrid sends them;
    // they never replace SendGrid's own fields.
    if let Value::Object(fields) = &mut event {
        for (key, value) in custom_args {
            fields.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    event
}

/// Makes one callback request and records how it went. Like SendGrid (which
/// retries events for a day), a callback answered 404, 429 or 5xx, or not at
/// all, is tried again (`callback_attempts` in all) with a growing pause: a
/// report that arrives before the sender has recorded the provider's id is
/// then not lost.
async fn send(
    state: &AppState,
    kind: &'static str,
    url: &str,
    provider_message_id: &str,
    statuses: Vec<String>,
    request: reqwest::RequestBuilder,
) {
    let attempts = state.faults().callback_attempts.max(1);
    let sent_at = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    let (mut status, mut error) = (None, None);
    for attempt in 1..=attempts {
        let Some(attempt_request) = request.try_clone() else {
            break;
        };
        (status, error) = match attempt_request.send().await {
            Ok(response) => {
                let code = response.status();
                if !code.is_success() {
                    tracing::warn!(kind, url, %code, attempt, "callback refused");
                }
                (Some(code.as_u16()), None)
            }
            Err(err) => {
                tracing::warn!(kind, url, %err, attempt, "callback failed");
                (None, Some(err.to_string()))
            }
        };
        let retryable = match status {
            Some(code) => code == 404 || code == 429 || code >= 500,
            None => true,
        };
        if !retryable || attempt == attempts {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
    }
    tracing::info!(kind, url, ?statuses, ?status, "callback sent");
    let mut log = lock(&state.0.callbacks);
    log.next_seq += 1;
    let record = CallbackRecord {
        seq: log.next_seq,
        kind,
        url: url.to_owned(),
        provider_message_id: provider_message_id.to_owned(),
        statuses,
        status,
        error,
        sent_at,
    };
    log.records.push(record);
}

/// An http(s) URL a callback can go to.
pub(crate) fn callback_url(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    matches!(parsed.scheme(), "http" | "https").then(|| url.to_owned())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use p256::pkcs8::EncodePublicKey as _;
    use shared::adapters::sendgrid_webhook::{
        EventWebhookKey, SignatureError, verify_event_signature,
    };

    use super::*;

    #[test]
    fn dev_keys_are_a_pair() {
        let key = parse_signing_key(DEV_SENDGRID_SIGNING_KEY).expect("dev signing key");
        let public = p256::PublicKey::from(key.verifying_key())
            .to_public_key_der()
            .expect("public key DER");
        assert_eq!(STANDARD.encode(public.as_bytes()), DEV_SENDGRID_PUBLIC_KEY);
    }

    #[test]
    fn sim_signed_events_verify_with_the_shared_check() {
        let key = parse_signing_key(DEV_SENDGRID_SIGNING_KEY).expect("dev signing key");
        let public = EventWebhookKey::parse(DEV_SENDGRID_PUBLIC_KEY).expect("dev public key");
        let body =
            serde_json::to_vec(&[sendgrid_event("delivered", "abc", "a@b.com", &Map::new())])
                .expect("json");
        let now = OffsetDateTime::now_utc();
        let timestamp = now.unix_timestamp().to_string();
        let signature = sign_sendgrid_events(&key, &timestamp, &body);
        let tolerance = Duration::from_secs(300);
        let verify = |body: &[u8]| {
            verify_event_signature(
                &public,
                Some(&signature),
                Some(&timestamp),
                body,
                now,
                tolerance,
            )
        };
        assert_eq!(verify(&body), Ok(()));
        assert_eq!(verify(b"[]"), Err(SignatureError::Invalid));
    }

    #[test]
    fn signing_keys_parse_in_three_spellings() {
        let key = parse_signing_key(DEV_SENDGRID_SIGNING_KEY).expect("base64");
        let hex: String = key.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_signing_key(&hex).expect("hex"), key);
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n{}\n-----END PRIVATE KEY-----\n",
            &DEV_SENDGRID_SIGNING_KEY[..64],
            &DEV_SENDGRID_SIGNING_KEY[64..]
        );
        assert_eq!(parse_signing_key(&pem).expect("pem"), key);
        for bad in ["", "nope!", "AAAA", &"0".repeat(64)] {
            assert!(parse_signing_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn events_carry_custom_args_at_the_top_level() {
        let mut args = Map::new();
        args.insert("message_id".into(), "msg-1".into());
        args.insert("event".into(), "forged".into());
        let event = sendgrid_event("bounce", "XID", "a@b.com", &args);
        assert_eq!(event["message_id"], "msg-1");
        assert_eq!(event["event"], "bounce");
        assert_eq!(event["sg_message_id"], "XID.filter0001.1.0");
        let reports =
            sendgrid_webhook::parse_events(format!("[{event}]").as_bytes()).expect("events");
        assert_eq!(reports[0].provider_message_id.as_deref(), Some("XID"));
        assert_eq!(reports[0].message_id.as_deref(), Some("msg-1"));
    }
}
