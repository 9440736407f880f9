//! Implementations of the ports: each is the only place that knows its wire format.

pub mod dynamodb;
pub mod providers;
pub mod secrets;
pub mod sendgrid;
pub mod sendgrid_webhook;
pub mod sqs;
pub mod twilio;
pub mod twilio_webhook;

/// Loads the AWS SDK configuration once (region, credentials and endpoints such as
/// `AWS_ENDPOINT_URL` come from the environment).
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}
