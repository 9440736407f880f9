//! Email through SendGrid's v3 Mail Send API: `POST {base}/v3/mail/send`, JSON,
//! `Authorization: Bearer {key}`, `202 Accepted` with the `X-Message-Id` header.

use serde_json::{Value, json};

use super::providers::{classify_status, classify_transport, truncate};
use crate::domain::Message;
use crate::ports::{Accepted, ProviderError};

#[derive(Clone)]
pub struct SendGrid {
    client: reqwest::Client,
    endpoint: String,
    api_key: String,
    subject: String,
}

impl std::fmt::Debug for SendGrid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendGrid")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl SendGrid {
    pub fn new(client: reqwest::Client, api_url: &str, api_key: &str, subject: &str) -> Self {
        Self {
            client,
            endpoint: format!("{}/v3/mail/send", api_url.trim_end_matches('/')),
            api_key: api_key.to_owned(),
            subject: subject.to_owned(),
        }
    }

    /// The mail/send payload. The API has no attachment files, only URLs: they are
    /// listed under the text. `custom_args.message_id` comes back in SendGrid's events.
    pub fn payload(&self, message: &Message) -> Value {
        let mut text = message.body.clone();
        let urls = message.attachment_urls();
        if !urls.is_empty() {
            text.push_str("\n\nAttachments:");
            for url in urls {
                text.push_str("\n- ");
                text.push_str(url);
            }
        }
        json!({
            "personalizations": [{ "to": [{ "email": message.to }] }],
            "from": { "email": message.from },
            "subject": self.subject,
            "content": [{ "type": "text/plain", "value": text }],
            "custom_args": { "message_id": message.id },
        })
    }

    pub fn request(&self, message: &Message) -> reqwest::RequestBuilder {
        self.client
            .post(&self.endpoint)
            .bearer_auth(&self.api_key)
            .json(&self.payload(message))
    }

    pub async fn send(&self, message: &Message) -> Result<Accepted, ProviderError> {
        let response = self
            .request(message)
            .send()
            .await
            .map_err(|e| classify_transport("sendgrid", &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        if status.is_success() {
            let id = headers
                .get("x-message-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            return Ok(Accepted {
                provider_message_id: id,
            });
        }
        let text = response.text().await.unwrap_or_default();
        let detail = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                let messages: Vec<&str> = v["errors"]
                    .as_array()?
                    .iter()
                    .filter_map(|e| e["message"].as_str())
                    .collect();
                (!messages.is_empty()).then(|| messages.join("; "))
            })
            .unwrap_or_else(|| truncate(&text, 300));
        Err(classify_status("sendgrid", status, &headers, &detail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Channel, Direction, NewMessage};

    fn email(attachments: Option<Vec<String>>) -> Message {
        Message::accept(
            NewMessage {
                channel: Channel::Email,
                from: "user@usehatchapp.com".into(),
                to: "contact@example.com".into(),
                body: "Hello world!".into(),
                attachments,
                timestamp: None,
                messaging_provider_id: None,
            },
            Direction::Outbound,
            time::OffsetDateTime::now_utc(),
        )
    }

    fn sendgrid() -> SendGrid {
        SendGrid::new(
            reqwest::Client::new(),
            "http://127.0.0.1:4010",
            "SG.key",
            "New message",
        )
    }

    #[test]
    fn payload_is_the_v3_mail_send_shape() {
        let m = email(Some(vec![]));
        assert_eq!(
            sendgrid().payload(&m),
            json!({
                "personalizations": [{"to": [{"email": "contact@example.com"}]}],
                "from": {"email": "user@usehatchapp.com"},
                "subject": "New message",
                "content": [{"type": "text/plain", "value": "Hello world!"}],
                "custom_args": {"message_id": m.id},
            })
        );
    }

    #[test]
    fn attachment_urls_are_listed_in_the_content() {
        let m = email(Some(vec![
            "https://e.com/a.pdf".into(),
            "https://e.com/b.png".into(),
        ]));
        assert_eq!(
            sendgrid().payload(&m)["content"][0]["value"],
            "Hello world!\n\nAttachments:\n- https://e.com/a.pdf\n- https://e.com/b.png"
        );
    }

    #[test]
    fn request_uses_bearer_auth_and_json() {
        let request = sendgrid().request(&email(None)).build().unwrap();
        assert_eq!(request.url().as_str(), "http://127.0.0.1:4010/v3/mail/send");
        assert_eq!(request.headers()["authorization"], "Bearer SG.key");
        assert_eq!(request.headers()["content-type"], "application/json");
    }
}
