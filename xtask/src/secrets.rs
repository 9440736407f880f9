//! The stack's secrets on the local emulator, in the shapes the functions read
//! (`shared::adapters::secrets`): the provider credentials
//! `{"twilio_account_sid", "twilio_auth_token", "sendgrid_api_key"}`, the
//! webhooks' `{"twilio_auth_token", "sendgrid_inbound_basic_auth"}` and the
//! cursor key (a plain string).

use anyhow::{Context, Result};
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use aws_sdk_secretsmanager::operation::create_secret::CreateSecretError;

/// Creates the secret `name`, or gives the existing one these values (idempotent).
pub async fn seed_provider_secret(
    aws: &aws_config::SdkConfig,
    name: &str,
    sid: &str,
    token: &str,
    key: &str,
) -> Result<()> {
    let value = serde_json::json!({
        "twilio_account_sid": sid,
        "twilio_auth_token": token,
        "sendgrid_api_key": key,
    });
    seed_secret(aws, name, &value.to_string()).await
}

/// Creates the webhooks' secret `name`, or gives the existing one these values.
pub async fn seed_webhook_secret(
    aws: &aws_config::SdkConfig,
    name: &str,
    twilio_auth_token: &str,
    inbound_basic_auth: &str,
) -> Result<()> {
    let value = serde_json::json!({
        "twilio_auth_token": twilio_auth_token,
        "sendgrid_inbound_basic_auth": inbound_basic_auth,
    });
    seed_secret(aws, name, &value.to_string()).await
}

/// Creates the secret `name` with the SecretString `value`, or gives the
/// existing one that value (idempotent).
pub async fn seed_secret(aws: &aws_config::SdkConfig, name: &str, value: &str) -> Result<()> {
    let client = Client::new(aws);
    let created = client
        .create_secret()
        .name(name)
        .description("A secret of the local messaging stack")
        .secret_string(value)
        .send()
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.as_service_error(),
                Some(CreateSecretError::ResourceExistsException(_))
            ) =>
        {
            client
                .put_secret_value()
                .secret_id(name)
                .secret_string(value)
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("{}", DisplayErrorContext(e)))
                .with_context(|| format!("updating the secret {name:?}"))?;
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!("{}", DisplayErrorContext(e)))
            .with_context(|| format!("creating the secret {name:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs only against a local emulator (`cargo xtask test` sets AWS_ENDPOINT_URL);
    /// never against AWS.
    fn local_endpoint() -> Option<String> {
        std::env::var("AWS_ENDPOINT_URL")
            .ok()
            .filter(|url| url.contains("://127.0.0.1:") || url.contains("://localhost:"))
    }

    #[tokio::test]
    async fn seeding_creates_then_updates_the_secret() {
        if local_endpoint().is_none() {
            eprintln!("skipped: AWS_ENDPOINT_URL does not point at a local emulator");
            return;
        }
        // Endpoint, region and credentials from the environment the tooling sets.
        let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let name = format!(
            "xtask-test/providers-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let read = || async {
            let value = Client::new(&aws)
                .get_secret_value()
                .secret_id(&name)
                .send()
                .await
                .expect("get secret");
            serde_json::from_str::<serde_json::Value>(value.secret_string().unwrap()).unwrap()
        };
        seed_provider_secret(&aws, &name, "AC1", "t1", "SG.1")
            .await
            .unwrap();
        assert_eq!(
            read().await,
            serde_json::json!({"twilio_account_sid": "AC1", "twilio_auth_token": "t1",
                               "sendgrid_api_key": "SG.1"})
        );
        seed_provider_secret(&aws, &name, "AC2", "t2", "SG.2")
            .await
            .unwrap();
        assert_eq!(read().await["twilio_auth_token"], "t2");
    }
}
