//! The provider credentials read from Secrets Manager and from SSM Parameter Store
//! on the emulator, through the real SDK clients, the way the delivery function
//! reads them at start-up: `Config` names the source, `load_provider_credentials`
//! reads it. Every secret and path is unique to its test.

use std::collections::HashMap;

use aws_sdk_ssm::types::ParameterType;
use e2e_tests::aws;
use shared::adapters::secrets::{ProviderCredentials, TwilioLogin, load_provider_credentials};
use shared::config::{Config, ConfigError};

fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    map.insert("TABLE_NAME".into(), "messages".into());
    Config::from_lookup(|name| map.get(name).cloned())
}

async fn load(vars: &[(&str, &str)]) -> Result<ProviderCredentials, ConfigError> {
    load_provider_credentials(&config(vars).expect("config"), &aws().await)
        .await
        .map(|(_, credentials)| credentials)
}

fn expected(tag: &str) -> ProviderCredentials {
    ProviderCredentials {
        twilio_account_sid: format!("AC{tag}"),
        twilio_login: TwilioLogin::AuthToken(format!("token-{tag}")),
        sendgrid_api_key: format!("SG.{tag}"),
    }
}

/// A new secret with this SecretString; returns its name and ARN.
async fn create_secret(value: &str) -> (String, String) {
    e2e_tests::create_secret("messaging-test/providers", value).await
}

fn token(c: &ProviderCredentials) -> &str {
    let TwilioLogin::AuthToken(token) = &c.twilio_login else {
        panic!("these tests store auth tokens")
    };
    token
}

fn secret_json(c: &ProviderCredentials) -> String {
    serde_json::json!({
        "twilio_account_sid": c.twilio_account_sid,
        "twilio_auth_token": token(c),
        "sendgrid_api_key": c.sendgrid_api_key,
    })
    .to_string()
}

async fn put_parameter(name: &str, kind: ParameterType, value: &str) {
    aws_sdk_ssm::Client::new(&aws().await)
        .put_parameter()
        .name(name)
        .r#type(kind)
        .value(value)
        .overwrite(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("put parameter {name}: {e:?}"));
}

/// A new SSM path holding these credentials (and a nested parameter that must be
/// ignored); returns the path without a trailing slash.
async fn create_parameters(c: &ProviderCredentials) -> String {
    let path = format!("/messaging-test/{}/providers", unique());
    put_parameter(
        &format!("{path}/twilio-account-sid"),
        ParameterType::String,
        &c.twilio_account_sid,
    )
    .await;
    put_parameter(
        &format!("{path}/twilio-auth-token"),
        ParameterType::SecureString,
        token(c),
    )
    .await;
    put_parameter(
        &format!("{path}/sendgrid-api-key"),
        ParameterType::SecureString,
        &c.sendgrid_api_key,
    )
    .await;
    put_parameter(
        &format!("{path}/nested/sendgrid-api-key"),
        ParameterType::SecureString,
        "SG.nested-must-not-be-used",
    )
    .await;
    path
}

#[tokio::test]
async fn credentials_are_read_from_a_secrets_manager_secret_by_name_or_arn() {
    let tag = unique();
    let (name, arn) = create_secret(&secret_json(&expected(&tag))).await;
    assert_eq!(
        load(&[("PROVIDER_SECRET_ID", &name)]).await.unwrap(),
        expected(&tag)
    );
    assert_eq!(
        load(&[("PROVIDER_SECRET_ID", &arn)]).await.unwrap(),
        expected(&tag)
    );
}

/// The recommended credential: a Twilio API key, and no auth token in the
/// delivery function's secret at all.
#[tokio::test]
async fn a_secret_with_a_twilio_api_key_sends_as_that_key() {
    let tag = unique();
    let (name, _) = create_secret(
        &serde_json::json!({
            "twilio_account_sid": format!("AC{tag}"),
            "twilio_api_key_sid": format!("SK{tag}"),
            "twilio_api_key_secret": format!("secret-{tag}"),
            "sendgrid_api_key": format!("SG.{tag}"),
        })
        .to_string(),
    )
    .await;
    let loaded = load(&[("PROVIDER_SECRET_ID", &name)]).await.unwrap();
    assert_eq!(loaded.twilio_account_sid, format!("AC{tag}"));
    assert_eq!(
        loaded.twilio_login,
        TwilioLogin::ApiKey {
            sid: format!("SK{tag}"),
            secret: format!("secret-{tag}")
        }
    );
}

#[tokio::test]
async fn the_secret_wins_over_environment_credentials() {
    let tag = unique();
    let (name, _) = create_secret(&secret_json(&expected(&tag))).await;
    let loaded = load(&[
        ("PROVIDER_SECRET_ID", &name),
        ("TWILIO_ACCOUNT_SID", "ACenv"),
        ("TWILIO_AUTH_TOKEN", "env-token"),
        ("SENDGRID_API_KEY", "SG.env"),
    ])
    .await
    .unwrap();
    assert_eq!(loaded, expected(&tag));
}

#[tokio::test]
async fn credentials_are_read_from_an_ssm_path_with_or_without_a_trailing_slash() {
    let tag = unique();
    let path = create_parameters(&expected(&tag)).await;
    assert_eq!(
        load(&[("PROVIDER_PARAMETER_PATH", &path)]).await.unwrap(),
        expected(&tag)
    );
    assert_eq!(
        load(&[("PROVIDER_PARAMETER_PATH", &format!("{path}/"))])
            .await
            .unwrap(),
        expected(&tag)
    );
}

#[tokio::test]
async fn a_missing_secret_is_named() {
    let name = format!("messaging-test/absent-{}", unique());
    let err = load(&[("PROVIDER_SECRET_ID", &name)]).await.unwrap_err();
    assert!(
        matches!(err, ConfigError::CredentialsUnavailable { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&name) && text.contains("does not exist"),
        "{text}"
    );
}

#[tokio::test]
async fn a_key_missing_from_the_secret_is_named() {
    let secret = serde_json::json!({"twilio_account_sid": "ACx", "twilio_auth_token": "s3cret"});
    let (name, _) = create_secret(&secret.to_string()).await;
    let err = load(&[("PROVIDER_SECRET_ID", &name)]).await.unwrap_err();
    assert_eq!(
        err,
        ConfigError::MissingCredential {
            location: format!("Secrets Manager secret {name:?}"),
            key: "sendgrid_api_key",
        }
    );
    let text = err.to_string();
    assert!(
        text.contains(&name) && text.contains("sendgrid_api_key"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
}

#[tokio::test]
async fn a_secret_that_is_not_json_is_reported_without_its_contents() {
    let (name, _) = create_secret("twilio_auth_token=s3cret").await;
    let err = load(&[("PROVIDER_SECRET_ID", &name)]).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, ConfigError::InvalidCredential { .. }),
        "{err:?}"
    );
    assert!(
        text.contains(&name) && text.contains("not valid JSON"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
}

#[tokio::test]
async fn a_parameter_missing_from_the_path_is_named() {
    let path = format!("/messaging-test/{}/providers", unique());
    put_parameter(
        &format!("{path}/twilio-account-sid"),
        ParameterType::String,
        "ACx",
    )
    .await;
    put_parameter(
        &format!("{path}/twilio-auth-token"),
        ParameterType::SecureString,
        "s3cret",
    )
    .await;
    let err = load(&[("PROVIDER_PARAMETER_PATH", &path)])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ConfigError::MissingCredential {
            location: format!("SSM parameter path {path:?}"),
            key: "sendgrid-api-key",
        }
    );
    let text = err.to_string();
    assert!(
        text.contains(&path) && text.contains("sendgrid-api-key"),
        "{text}"
    );

    // An empty (or unknown) path: the first parameter is the one named.
    let empty = format!("/messaging-test/{}/nothing", unique());
    let err = load(&[("PROVIDER_PARAMETER_PATH", &empty)])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("twilio-account-sid"), "{err}");
}

#[tokio::test]
async fn a_secret_stored_as_a_plain_string_parameter_is_refused() {
    let tag = unique();
    let path = create_parameters(&expected(&tag)).await;
    put_parameter(
        &format!("{path}/sendgrid-api-key"),
        ParameterType::String,
        "SG.s3cret",
    )
    .await;
    let err = load(&[("PROVIDER_PARAMETER_PATH", &path)])
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("{path}/sendgrid-api-key"))
            && text.contains("expected a SecureString"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
}

#[tokio::test]
async fn a_secret_and_a_path_together_are_a_configuration_error() {
    let err = config(&[
        ("PROVIDER_SECRET_ID", "messaging/providers"),
        ("PROVIDER_PARAMETER_PATH", "/messaging/providers"),
    ])
    .unwrap_err();
    assert_eq!(
        err,
        ConfigError::Conflict {
            first: "PROVIDER_SECRET_ID",
            second: "PROVIDER_PARAMETER_PATH",
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("PROVIDER_SECRET_ID") && text.contains("PROVIDER_PARAMETER_PATH"),
        "{text}"
    );
}

#[tokio::test]
async fn no_credentials_at_all_fail_with_what_to_set() {
    let err = load(&[]).await.unwrap_err();
    assert_eq!(err, ConfigError::NoCredentials);
    assert!(err.to_string().contains("PROVIDER_SECRET_ID"), "{err}");
}
