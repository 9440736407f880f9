//! `GET /messages/{id}`: one message with its delivery status.

use lambda_http::{Error, Request, service_fn};
use shared::adapters::{aws_config, dynamodb::DynamoDbStore};
use shared::{api, config::Config, telemetry};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let config = Config::from_env()?;
    let aws = aws_config().await;
    let store = DynamoDbStore::new(aws_sdk_dynamodb::Client::new(&aws), &config.table_name);
    lambda_http::run(service_fn(|request: Request| {
        let store = &store;
        async move { Ok::<_, Error>(api::handle_get_message(store, request).await) }
    }))
    .await
}
