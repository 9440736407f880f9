//! `POST /messages/outbound`: validate, store as `queued`, enqueue for delivery.

use lambda_http::{Error, Request, service_fn};
use shared::{api, startup::Startup};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let startup = Startup::init().await?;
    let (store, queue) = (startup.message_store(), startup.delivery_queue()?);
    lambda_http::run(service_fn(|request: Request| {
        let (store, queue) = (&store, &queue);
        async move { Ok::<_, Error>(api::handle_outbound(store, queue, request).await) }
    }))
    .await
}
