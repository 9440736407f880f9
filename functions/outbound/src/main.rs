//! `POST /messages/outbound`: validate, store as `queued`, enqueue for delivery.

use lambda_http::{Error, Request, service_fn};
use shared::adapters::{aws_config, dynamodb::DynamoDbStore, sqs::SqsQueue};
use shared::{api, config::Config, telemetry};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let config = Config::from_env()?;
    let aws = aws_config().await;
    let store = DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&aws), &config.table_name);
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&aws), config.require_queue_url()?);
    lambda_http::run(service_fn(|request: Request| {
        let (store, queue) = (&store, &queue);
        async move { Ok::<_, Error>(api::handle_outbound(store, queue, request).await) }
    }))
    .await
}
