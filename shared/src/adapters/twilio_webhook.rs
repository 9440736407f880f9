//! Twilio's webhooks: inbound SMS/MMS and message status callbacks.
//!
//! Both arrive as `application/x-www-form-urlencoded` POSTs signed with
//! `X-Twilio-Signature`: base64(HMAC-SHA1(auth token, URL followed by every form
//! parameter's name and value, sorted by name)). Both are answered with empty TwiML.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::domain::validation::is_e164;
use crate::domain::{Channel, FieldError, NewMessage, ProviderKind, ReportedOutcome, StatusReport};

pub const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// Empty TwiML answer for both webhooks, served as text/xml.
pub const EMPTY_TWIML: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#;

/// The longest `MessageSid` accepted (real ones are 34 characters).
const MAX_SID_LEN: usize = 256;

type HmacSha1 = Hmac<Sha1>;

/// Decodes an `application/x-www-form-urlencoded` body, keeping order and repeats.
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// The MAC Twilio computes for `url` and `params`: the URL, then each parameter's
/// name and value, sorted by name and then value, a repeated identical pair once
/// (as Twilio's own request validators do).
fn mac(auth_token: &str, url: &str, params: &[(String, String)]) -> HmacSha1 {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    sorted.sort_unstable();
    sorted.dedup();
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = HmacSha1::new_from_slice(auth_token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(url.as_bytes());
    for (key, value) in sorted {
        mac.update(key.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// The `X-Twilio-Signature` value Twilio sends for a POST of `params` to `url`.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    STANDARD.encode(mac(auth_token, url, params).finalize().into_bytes())
}

/// Checks an `X-Twilio-Signature` in constant time. `url` must be the URL exactly as
/// configured at Twilio (scheme, host, path and query). As Twilio's own validators
/// do, the URL is also tried without its port and with the scheme's default port,
/// since Twilio may sign either spelling.
pub fn verify_signature(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    signature: Option<&str>,
) -> bool {
    let mut candidates = vec![url.to_owned()];
    candidates.extend(port_variants(url));
    verify_any(auth_token, &candidates, params, signature)
}

/// Checks an `X-Twilio-Signature` against `url` exactly, in no other spelling:
/// for a configured public URL, the one Twilio was given.
pub fn verify_signature_exact(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    signature: Option<&str>,
) -> bool {
    verify_any(auth_token, &[url.to_owned()], params, signature)
}

fn verify_any(
    auth_token: &str,
    candidates: &[String],
    params: &[(String, String)],
    signature: Option<&str>,
) -> bool {
    let Some(given) = signature.and_then(|s| STANDARD.decode(s.trim()).ok()) else {
        return false;
    };
    // Every candidate is checked, so the time taken does not tell which one matched.
    candidates.iter().fold(false, |valid, candidate| {
        mac(auth_token, candidate, params)
            .verify_slice(&given)
            .is_ok()
            | valid
    })
}

/// `url` without its port and with the scheme's default port, where different.
fn port_variants(url: &str) -> Vec<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Vec::new();
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => "443",
        "http" => "80",
        _ => return Vec::new(),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // Host part: after any userinfo; a port follows the last ':' outside IPv6 brackets.
    let host_start = authority.rfind('@').map_or(0, |at| at + 1);
    let host_and_port = &authority[host_start..];
    let bracket_end = host_and_port.rfind(']').map_or(0, |b| b + 1);
    let without_port = match host_and_port[bracket_end..].rfind(':') {
        Some(colon) => &authority[..host_start + bracket_end + colon],
        None => authority,
    };
    let with_default = format!("{without_port}:{default_port}");
    [without_port.to_owned(), with_default]
        .into_iter()
        .filter(|a| a != authority)
        .map(|a| format!("{scheme}://{a}{tail}"))
        .collect()
}

/// The value of the first non-empty parameter called `name`.
fn param<'p>(params: &'p [(String, String)], name: &str) -> Option<&'p str> {
    params
        .iter()
        .find(|(k, v)| k == name && !v.trim().is_empty())
        .map(|(_, v)| v.as_str())
}

fn message_sid(params: &[(String, String)], errors: &mut Vec<FieldError>) -> Option<String> {
    match param(params, "MessageSid") {
        None => errors.push(FieldError::new("MessageSid", "is required")),
        Some(sid) if sid.len() > MAX_SID_LEN => errors.push(FieldError::new(
            "MessageSid",
            format!("must be at most {MAX_SID_LEN} characters"),
        )),
        Some(sid) => return Some(sid.trim().to_owned()),
    }
    None
}

fn phone_number(
    params: &[(String, String)],
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match param(params, field) {
        None => errors.push(FieldError::new(field, "is required")),
        Some(number) if !is_e164(number) => errors.push(FieldError::new(
            field,
            "must be an E.164 phone number (+ followed by 8 to 15 digits)",
        )),
        Some(number) => return Some(number.to_owned()),
    }
    None
}

fn is_http_url(s: &str) -> bool {
    url::Url::parse(s).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
    })
}

/// An inbound SMS or MMS (the "A message comes in" webhook).
pub fn inbound_message(params: &[(String, String)]) -> Result<NewMessage, Vec<FieldError>> {
    let mut errors = Vec::new();
    let sid = message_sid(params, &mut errors);
    let from = phone_number(params, "From", &mut errors);
    let to = phone_number(params, "To", &mut errors);

    let num_media = match param(params, "NumMedia").map(|n| n.trim().parse::<u32>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            errors.push(FieldError::new("NumMedia", "must be a whole number"));
            0
        }
    };
    // MediaUrl0..N, in index order whatever their order in the body.
    let mut media: Vec<(u32, &str)> = params
        .iter()
        .filter_map(|(k, v)| {
            let index = k.strip_prefix("MediaUrl")?.parse::<u32>().ok()?;
            Some((index, v.trim()))
        })
        .filter(|(_, url)| !url.is_empty())
        .collect();
    media.sort_by_key(|(index, _)| *index);
    for (index, url) in &media {
        if !is_http_url(url) {
            errors.push(FieldError::new(
                format!("MediaUrl{index}"),
                "must be an http(s) URL",
            ));
        }
    }
    let channel = if num_media > 0 || !media.is_empty() {
        Channel::Mms
    } else {
        Channel::Sms
    };

    let body = params
        .iter()
        .find(|(k, _)| k == "Body")
        .map_or("", |(_, v)| v.as_str());
    if body.trim().is_empty() && channel == Channel::Sms {
        errors.push(FieldError::new("Body", "must not be empty"));
    }

    match (sid, from, to) {
        (Some(sid), Some(from), Some(to)) if errors.is_empty() => Ok(NewMessage {
            channel,
            from,
            to,
            body: body.to_owned(),
            attachments: (!media.is_empty())
                .then(|| media.iter().map(|(_, url)| (*url).to_owned()).collect()),
            timestamp: None,
            messaging_provider_id: Some(sid),
        }),
        _ => Err(errors),
    }
}

/// What a `MessageStatus` means for the message.
fn outcome(status: &str) -> Option<ReportedOutcome> {
    Some(match status {
        "accepted" | "queued" | "sending" | "sent" | "receiving" | "received" | "scheduled" => {
            ReportedOutcome::InProgress
        }
        "delivered" | "read" => ReportedOutcome::Delivered,
        "undelivered" | "failed" | "canceled" => ReportedOutcome::Failed,
        _ => return None,
    })
}

/// A message status callback (the `StatusCallback` given when sending).
pub fn status_report(params: &[(String, String)]) -> Result<StatusReport, Vec<FieldError>> {
    let mut errors = Vec::new();
    let sid = message_sid(params, &mut errors);
    let status = match param(params, "MessageStatus").map(str::trim) {
        None => {
            errors.push(FieldError::new("MessageStatus", "is required"));
            None
        }
        Some(status) => match outcome(status) {
            Some(outcome) => Some((status, outcome)),
            None => {
                errors.push(FieldError::new(
                    "MessageStatus",
                    format!("unknown message status {status:?}"),
                ));
                None
            }
        },
    };
    match (sid, status) {
        (Some(sid), Some((status, outcome))) if errors.is_empty() => Ok(StatusReport {
            provider: ProviderKind::Twilio,
            provider_message_id: Some(sid),
            message_id: None,
            outcome,
            provider_status: status.to_owned(),
            detail: param(params, "ErrorCode")
                .map(|code| format!("{status} (ErrorCode {})", code.trim())),
            event_id: None,
            opt_out: None,
        }),
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    // Twilio's own test vector (twilio-python, tests/unit/test_request_validator.py).
    const SDK_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const SDK_TOKEN: &str = "12345";
    const SDK_SIGNATURE: &str = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";

    fn sdk_params() -> Vec<(String, String)> {
        pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
            ("Caller", "+14158675309"),
        ])
    }

    #[test]
    fn signature_matches_twilios_published_example() {
        assert_eq!(signature(SDK_TOKEN, SDK_URL, &sdk_params()), SDK_SIGNATURE);
        assert!(verify_signature(
            SDK_TOKEN,
            SDK_URL,
            &sdk_params(),
            Some(SDK_SIGNATURE)
        ));
        // The example of the "Webhooks security" documentation page.
        let docs = pairs(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]);
        assert_eq!(
            signature(SDK_TOKEN, SDK_URL, &docs),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }

    #[test]
    fn repeated_parameters_are_sorted_by_value_once_each() {
        // Twilio's own vector for repeated parameters (same test file).
        let expected = "IK+Dwps556ElfBT0I3Rgjkr1wJU=";
        let repeated = parse_form(b"Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234");
        assert_eq!(signature(SDK_TOKEN, SDK_URL, &repeated), expected);
        let twice = parse_form(b"Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234&Digits=1234");
        assert_eq!(signature(SDK_TOKEN, SDK_URL, &twice), expected);
    }

    #[test]
    fn the_exact_check_accepts_only_the_url_itself() {
        let params = sdk_params();
        // SDK_SIGNATURE is over SDK_URL: the exact check takes it there, and
        // refuses it for the same URL with a port (which the lenient check allows).
        let with_port = "https://mycompany.com:1234/myapp.php?foo=1&bar=2";
        assert!(verify_signature_exact(
            SDK_TOKEN,
            SDK_URL,
            &params,
            Some(SDK_SIGNATURE)
        ));
        assert!(verify_signature(
            SDK_TOKEN,
            with_port,
            &params,
            Some(SDK_SIGNATURE)
        ));
        assert!(!verify_signature_exact(
            SDK_TOKEN,
            with_port,
            &params,
            Some(SDK_SIGNATURE)
        ));
        let http = "http://mycompany.com/myapp.php?foo=1&bar=2";
        assert!(!verify_signature_exact(
            SDK_TOKEN,
            http,
            &params,
            Some(SDK_SIGNATURE)
        ));
    }

    #[test]
    fn port_spellings_are_accepted_like_twilios_validators() {
        let params = sdk_params();
        // Twilio's vectors: the port removed on https, and the default port added.
        let with_port = "https://mycompany.com:1234/myapp.php?foo=1&bar=2";
        assert!(verify_signature(
            SDK_TOKEN,
            with_port,
            &params,
            Some(SDK_SIGNATURE)
        ));
        assert!(verify_signature(
            SDK_TOKEN,
            SDK_URL,
            &params,
            Some("kvajT1Ptam85bY51eRf/AJRuM3w=")
        ));
        let http = "http://mycompany.com/myapp.php?foo=1&bar=2";
        assert!(verify_signature(
            SDK_TOKEN,
            http,
            &params,
            Some("0ZXoZLH/DfblKGATFgpif+LLRf4=")
        ));
        let http_port = "http://mycompany.com:1234/myapp.php?foo=1&bar=2";
        assert!(verify_signature(
            SDK_TOKEN,
            http_port,
            &params,
            Some("Zmvh+3yNM1Phv2jhDCwEM3q5ebU=")
        ));
        assert_eq!(
            port_variants("https://u:p@[::1]:8443/x?a=1"),
            vec!["https://u:p@[::1]/x?a=1", "https://u:p@[::1]:443/x?a=1"]
        );
        assert_eq!(
            port_variants("https://example.com"),
            vec!["https://example.com:443"]
        );
    }

    #[test]
    fn forged_or_missing_signatures_are_refused() {
        let params = sdk_params();
        let sig = Some(SDK_SIGNATURE);
        assert!(!verify_signature("54321", SDK_URL, &params, sig));
        let mut altered = params.clone();
        altered[1].1 = "9999".into();
        assert!(!verify_signature(SDK_TOKEN, SDK_URL, &altered, sig));
        let mut added = params.clone();
        added.push(("Extra".into(), "1".into()));
        assert!(!verify_signature(SDK_TOKEN, SDK_URL, &added, sig));
        let other_url = "https://mycompany.com/myapp.php?foo=1&bar=3";
        assert!(!verify_signature(SDK_TOKEN, other_url, &params, sig));
        assert!(!verify_signature(SDK_TOKEN, SDK_URL, &params, None));
        assert!(!verify_signature(SDK_TOKEN, SDK_URL, &params, Some("")));
        assert!(!verify_signature(
            SDK_TOKEN,
            SDK_URL,
            &params,
            Some("not base64!")
        ));
    }

    #[test]
    fn forms_decode_in_order_with_repeats() {
        let form = parse_form(b"Body=Hello+there%21&To=%2B15550001111&Body=again&Empty=");
        assert_eq!(
            form,
            pairs(&[
                ("Body", "Hello there!"),
                ("To", "+15550001111"),
                ("Body", "again"),
                ("Empty", ""),
            ])
        );
    }

    fn inbound(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut params = pairs(&[
            ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
            ("AccountSid", "ACtest"),
            ("From", "+15550001111"),
            ("To", "+15550002222"),
            ("Body", "Hello"),
            ("NumMedia", "0"),
        ]);
        params.extend(pairs(extra));
        params
    }

    fn error_fields(errors: Vec<FieldError>) -> Vec<String> {
        errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn inbound_sms_is_parsed() {
        let m = inbound_message(&inbound(&[])).expect("valid sms");
        assert_eq!(m.channel, Channel::Sms);
        assert_eq!(
            (m.from.as_str(), m.to.as_str()),
            ("+15550001111", "+15550002222")
        );
        assert_eq!(m.body, "Hello");
        assert_eq!(m.attachments, None);
        assert_eq!(m.timestamp, None);
        assert_eq!(
            m.messaging_provider_id.as_deref(),
            Some("SM0123456789abcdef0123456789abcdef")
        );
    }

    #[test]
    fn inbound_mms_keeps_media_in_index_order() {
        let mut params = inbound(&[
            ("MediaUrl1", "https://api.twilio.com/media/b"),
            ("MediaContentType1", "image/png"),
            ("MediaUrl0", "https://api.twilio.com/media/a"),
            ("MediaContentType0", "image/jpeg"),
        ]);
        params.retain(|(k, _)| k != "NumMedia" && k != "Body");
        params.push(("NumMedia".into(), "2".into()));
        params.push(("Body".into(), String::new()));
        let m = inbound_message(&params).expect("valid mms");
        assert_eq!(m.channel, Channel::Mms);
        assert_eq!(m.body, "");
        assert_eq!(
            m.attachments,
            Some(vec![
                "https://api.twilio.com/media/a".to_owned(),
                "https://api.twilio.com/media/b".to_owned(),
            ])
        );
    }

    #[test]
    fn inbound_errors_use_twilios_names() {
        let errors = inbound_message(&pairs(&[("Body", "x")])).expect_err("empty");
        assert_eq!(error_fields(errors), ["MessageSid", "From", "To"]);

        let mut params = inbound(&[("MediaUrl0", "ftp://example.com/x")]);
        params.retain(|(k, _)| k != "From" && k != "NumMedia");
        params.push(("From".into(), "15550001111".into()));
        params.push(("NumMedia".into(), "two".into()));
        let errors = inbound_message(&params).expect_err("bad fields");
        assert_eq!(error_fields(errors), ["From", "NumMedia", "MediaUrl0"]);

        let mut empty_sms = inbound(&[]);
        empty_sms.retain(|(k, _)| k != "Body");
        let errors = inbound_message(&empty_sms).expect_err("empty sms");
        assert_eq!(error_fields(errors), ["Body"]);
    }

    fn status(status: &str, extra: &[(&str, &str)]) -> Result<StatusReport, Vec<FieldError>> {
        let mut params = pairs(&[
            ("MessageSid", "SMabc"),
            ("SmsSid", "SMabc"),
            ("AccountSid", "ACtest"),
            ("MessageStatus", status),
            ("SmsStatus", status),
            ("ApiVersion", "2010-04-01"),
        ]);
        params.extend(pairs(extra));
        status_report(&params)
    }

    #[test]
    fn status_callbacks_map_to_outcomes() {
        for (name, expected) in [
            ("accepted", ReportedOutcome::InProgress),
            ("queued", ReportedOutcome::InProgress),
            ("sending", ReportedOutcome::InProgress),
            ("sent", ReportedOutcome::InProgress),
            ("receiving", ReportedOutcome::InProgress),
            ("received", ReportedOutcome::InProgress),
            ("scheduled", ReportedOutcome::InProgress),
            ("delivered", ReportedOutcome::Delivered),
            ("read", ReportedOutcome::Delivered),
            ("undelivered", ReportedOutcome::Failed),
            ("failed", ReportedOutcome::Failed),
            ("canceled", ReportedOutcome::Failed),
        ] {
            let report = status(name, &[]).expect(name);
            assert_eq!(report.outcome, expected, "{name}");
            assert_eq!(report.provider_status, name);
        }
        let report = status("delivered", &[]).expect("delivered");
        assert_eq!(
            report,
            StatusReport {
                provider: ProviderKind::Twilio,
                provider_message_id: Some("SMabc".into()),
                message_id: None,
                outcome: ReportedOutcome::Delivered,
                provider_status: "delivered".into(),
                detail: None,
                event_id: None,
                opt_out: None,
            }
        );
    }

    #[test]
    fn status_error_codes_become_the_detail() {
        let report = status("undelivered", &[("ErrorCode", "30003")]).expect("undelivered");
        assert_eq!(report.outcome, ReportedOutcome::Failed);
        assert_eq!(
            report.detail.as_deref(),
            Some("undelivered (ErrorCode 30003)")
        );
        let report = status("delivered", &[("ErrorCode", "")]).expect("delivered");
        assert_eq!(report.detail, None);
    }

    #[test]
    fn bad_status_callbacks_are_refused() {
        let errors = status("exploded", &[]).expect_err("unknown status");
        assert_eq!(error_fields(errors), ["MessageStatus"]);
        let errors = status_report(&pairs(&[("MessageStatus", "")])).expect_err("empty");
        assert_eq!(error_fields(errors), ["MessageSid", "MessageStatus"]);
    }
}
