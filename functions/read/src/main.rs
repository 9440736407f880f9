//! The read API: `GET /messages/{id}` (one message with its delivery status and
//! history) and the conversation routes (`GET /conversations`,
//! `/conversations/{id}`, `/conversations/{id}/messages`).

use lambda_http::Error;
use shared::{http, startup::Startup};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let startup = Startup::init().await?;
    let router = http::read_router(
        startup.message_store(),
        startup.cursor_codec().await?,
        startup.authenticator(),
    );
    lambda_http::run(router).await
}
