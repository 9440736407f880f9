//! SQS-triggered delivery: sends each queued message to its provider and reports
//! the records to retry as partial batch failures.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use shared::adapters::providers::{Providers, http_client};
use shared::adapters::{aws_config, dynamodb::DynamoDbStore, sqs::SqsQueue};
use shared::{config::Config, delivery::Deliverer, telemetry};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let config = Config::from_env()?;
    let aws = aws_config().await;
    let providers =
        Providers::from_config(&config, http_client(config.delivery.provider_timeout)?)?;
    let deliverer = Deliverer::new(
        DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&aws), &config.table_name),
        SqsQueue::new(aws_sdk_sqs::Client::new(&aws), config.require_queue_url()?),
        providers,
        config.delivery.retry,
        config.delivery.lease,
    );
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let deliverer = &deliverer;
        async move {
            Ok::<SqsBatchResponse, Error>(
                shared::adapters::sqs::handle_event(deliverer, event).await,
            )
        }
    }))
    .await
}
