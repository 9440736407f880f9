//! SMS and MMS through the Twilio Messages API:
//! `POST {base}/2010-04-01/Accounts/{sid}/Messages.json`, form-encoded, HTTP Basic
//! auth `sid:token`, `201 Created` with the message `sid`.

use serde::Deserialize;

use super::providers::{classify_status, classify_transport, truncate};
use crate::domain::Message;
use crate::ports::{Accepted, ProviderError};

/// Twilio's error for a recipient who replied STOP to the sending number
/// ("Attempt to send to unsubscribed recipient").
const UNSUBSCRIBED_RECIPIENT: i64 = 21610;

#[derive(Clone)]
pub struct Twilio {
    client: reqwest::Client,
    endpoint: String,
    /// HTTP Basic: the account SID and auth token, or an API key's sid and secret.
    user: String,
    password: String,
    /// Sent as `StatusCallback`: where Twilio reports delivery.
    status_callback: Option<String>,
}

impl std::fmt::Debug for Twilio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Twilio")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Created {
    sid: Option<String>,
}

#[derive(Deserialize)]
struct TwilioError {
    code: Option<i64>,
    message: Option<String>,
}

impl Twilio {
    pub fn new(
        client: reqwest::Client,
        api_url: &str,
        account_sid: &str,
        (user, password): (&str, &str),
    ) -> Self {
        Self {
            client,
            endpoint: format!(
                "{}/2010-04-01/Accounts/{account_sid}/Messages.json",
                api_url.trim_end_matches('/')
            ),
            user: user.to_owned(),
            password: password.to_owned(),
            status_callback: None,
        }
    }

    /// Asks Twilio to report each message's delivery to `url` (our status webhook).
    pub fn with_status_callback(mut self, url: Option<String>) -> Self {
        self.status_callback = url;
        self
    }

    /// The form fields of a Messages API request: `To`, `From`, `Body` (omitted when
    /// empty, which Twilio allows for MMS) and one `MediaUrl` per attachment.
    pub fn form(message: &Message) -> Vec<(&'static str, &str)> {
        let mut form = vec![("To", message.to.as_str()), ("From", message.from.as_str())];
        if !message.body.is_empty() {
            form.push(("Body", message.body.as_str()));
        }
        form.extend(
            message
                .attachment_urls()
                .iter()
                .map(|url| ("MediaUrl", url.as_str())),
        );
        form
    }

    pub fn request(&self, message: &Message) -> reqwest::RequestBuilder {
        let mut form = Self::form(message);
        if let Some(url) = &self.status_callback {
            form.push(("StatusCallback", url.as_str()));
        }
        self.client
            .post(&self.endpoint)
            .basic_auth(&self.user, Some(&self.password))
            .form(&form)
    }

    pub async fn send(&self, message: &Message) -> Result<Accepted, ProviderError> {
        let response = self
            .request(message)
            .send()
            .await
            .map_err(|e| classify_transport("twilio", &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        if status.is_success() {
            let sid = serde_json::from_str::<Created>(&text)
                .ok()
                .and_then(|c| c.sid);
            return Ok(Accepted {
                provider_message_id: sid,
            });
        }
        let error = serde_json::from_str::<TwilioError>(&text);
        let unsubscribed = matches!(
            &error,
            Ok(TwilioError {
                code: Some(UNSUBSCRIBED_RECIPIENT),
                ..
            })
        );
        let detail = match error {
            Ok(TwilioError {
                message: Some(m),
                code: Some(c),
            }) => format!("{m} (code {c})"),
            Ok(TwilioError {
                message: Some(m), ..
            }) => m,
            _ => truncate(&text, 300),
        };
        if unsubscribed && status.is_client_error() {
            return Err(ProviderError::Unsubscribed {
                reason: format!("twilio answered {}: {detail}", status.as_u16()),
            });
        }
        Err(classify_status("twilio", status, &headers, &detail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Channel, Direction, NewMessage};

    fn message(channel: Channel, body: &str, attachments: Option<Vec<String>>) -> Message {
        Message::accept(
            NewMessage {
                channel,
                from: "+18045551234".into(),
                to: "+12016661234".into(),
                body: body.into(),
                attachments,
                timestamp: None,
                messaging_provider_id: None,
            },
            Direction::Outbound,
            time::OffsetDateTime::now_utc(),
        )
    }

    #[test]
    fn sms_form_fields() {
        let m = message(Channel::Sms, "Hello & bye", None);
        assert_eq!(
            Twilio::form(&m),
            vec![
                ("To", "+12016661234"),
                ("From", "+18045551234"),
                ("Body", "Hello & bye")
            ]
        );
    }

    #[test]
    fn mms_sends_one_media_url_per_attachment_and_may_omit_the_body() {
        let m = message(
            Channel::Mms,
            "",
            Some(vec![
                "https://e.com/a.png".into(),
                "https://e.com/b.gif".into(),
            ]),
        );
        assert_eq!(
            Twilio::form(&m),
            vec![
                ("To", "+12016661234"),
                ("From", "+18045551234"),
                ("MediaUrl", "https://e.com/a.png"),
                ("MediaUrl", "https://e.com/b.gif"),
            ]
        );
    }

    #[test]
    fn request_has_the_messages_url_basic_auth_and_form_body() {
        let twilio = Twilio::new(
            reqwest::Client::new(),
            "http://127.0.0.1:4010/",
            "AC123",
            ("AC123", "tok"),
        );
        let request = twilio
            .request(&message(Channel::Sms, "hi there", None))
            .build()
            .unwrap();
        assert_eq!(request.method(), "POST");
        assert_eq!(
            request.url().as_str(),
            "http://127.0.0.1:4010/2010-04-01/Accounts/AC123/Messages.json"
        );
        // base64("AC123:tok")
        assert_eq!(request.headers()["authorization"], "Basic QUMxMjM6dG9r");
        assert_eq!(
            request.headers()["content-type"],
            "application/x-www-form-urlencoded"
        );
        let body = std::str::from_utf8(request.body().unwrap().as_bytes().unwrap()).unwrap();
        assert_eq!(body, "To=%2B12016661234&From=%2B18045551234&Body=hi+there");
    }

    #[test]
    fn an_api_key_authenticates_for_the_account_in_the_url() {
        let twilio = Twilio::new(
            reqwest::Client::new(),
            "http://127.0.0.1:4010",
            "AC123",
            ("SK9", "sec"),
        );
        let request = twilio
            .request(&message(Channel::Sms, "hi", None))
            .build()
            .unwrap();
        assert_eq!(
            request.url().as_str(),
            "http://127.0.0.1:4010/2010-04-01/Accounts/AC123/Messages.json"
        );
        // base64("SK9:sec")
        assert_eq!(request.headers()["authorization"], "Basic U0s5OnNlYw==");
    }

    #[test]
    fn a_configured_status_callback_is_sent_with_every_message() {
        let twilio = Twilio::new(reqwest::Client::new(), "http://sim", "AC1", ("AC1", "t"))
            .with_status_callback(Some(
                "https://api.example.com/webhooks/twilio/status".into(),
            ));
        let request = twilio
            .request(&message(Channel::Sms, "hi", None))
            .build()
            .unwrap();
        let body = std::str::from_utf8(request.body().unwrap().as_bytes().unwrap()).unwrap();
        assert!(
            body.ends_with(
                "&StatusCallback=https%3A%2F%2Fapi.example.com%2Fwebhooks%2Ftwilio%2Fstatus"
            ),
            "{body}"
        );
    }
}
