//! Which URL a Twilio signature is checked against, through the webhooks
//! function's router: on Lambda only the URL as rebuilt from the request
//! (`X-Forwarded-Proto` https); a local runtime, which may report https for a
//! plain-http request, also the other scheme.

use std::collections::HashMap;

use e2e_tests::{keyword_replies, phone, signed_twilio_request, store, twilio_auth_token};
use shared::adapters::secrets::WebhookCredentials;
use shared::config::Config;
use shared::http;
use shared::webhooks::Webhooks;
use tower::ServiceExt;

/// The webhooks' router with the stack's settings, as on real Lambda or not.
async fn router(on_lambda: bool) -> axum::Router {
    let mut vars: HashMap<String, String> = std::env::vars().collect();
    vars.remove("PUBLIC_BASE_URL");
    if on_lambda {
        vars.insert("AWS_LAMBDA_FUNCTION_NAME".into(), "webhooks".into());
        vars.remove("AWS_ENDPOINT_URL");
    }
    let config = Config::from_lookup(|name| vars.get(name).cloned()).expect("configuration");
    assert_eq!(config.webhooks.local_runtime, !on_lambda);
    let credentials = WebhookCredentials {
        twilio_auth_token: twilio_auth_token().await,
        sendgrid_inbound_basic_auth: None,
    };
    let webhooks = Webhooks::new(
        store().await,
        keyword_replies().await,
        &credentials,
        &config.webhooks,
    )
    .expect("webhooks");
    http::webhooks_router(webhooks)
}

/// A Twilio message post arriving as https, signed for `signed_base`.
async fn status(router: &axum::Router, signed_base: &str) -> u16 {
    let params: Vec<(String, String)> = [
        ("MessageSid", format!("SM{}", uuid::Uuid::new_v4().simple())),
        ("AccountSid", "ACtest".to_owned()),
        ("From", phone()),
        ("To", "+18045551234".to_owned()),
        ("Body", "which url".to_owned()),
        ("NumMedia", "0".to_owned()),
    ]
    .map(|(k, v)| (k.to_owned(), v))
    .into();
    let token = twilio_auth_token().await;
    let request = signed_twilio_request(&token, signed_base, "/webhooks/twilio/messages", &params);
    router
        .clone()
        .oneshot(request)
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn on_lambda_only_the_https_url_is_accepted() {
    let lambda = router(true).await;
    assert_eq!(status(&lambda, "https://hooks.example.test").await, 200);
    assert_eq!(
        status(&lambda, "http://hooks.example.test").await,
        403,
        "signed for http, arrived over https"
    );
    let local = router(false).await;
    assert_eq!(status(&local, "http://hooks.example.test").await, 200);
}
