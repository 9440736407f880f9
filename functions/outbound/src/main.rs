//! `POST /messages/outbound`: validate, store as `queued`, enqueue for delivery.

use lambda_http::Error;
use shared::{http, startup::Startup};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let startup = Startup::init().await?;
    let router = http::outbound_router(
        startup.message_store(),
        startup.delivery_queue()?,
        startup.send_rules(),
        startup.authenticator(),
    );
    lambda_http::run(router).await
}
