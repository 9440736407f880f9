//! SQS-triggered delivery: sends each queued message to its provider and reports
//! the records to retry as partial batch failures.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use shared::sqs_trigger::handle_event;
use shared::startup::Startup;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Once per cold start: a missing setting or credential stops the start-up.
    let deliverer = Startup::init().await?.deliverer().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let deliverer = &deliverer;
        async move { Ok::<SqsBatchResponse, Error>(handle_event(deliverer, event).await) }
    }))
    .await
}
