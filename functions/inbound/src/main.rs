//! `POST /messages/inbound`: validate and store a message received from a
//! provider, once per `messaging_provider_id`; answer STOP, START and HELP.

use lambda_http::Error;
use shared::{http, startup::Startup};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let startup = Startup::init().await?;
    let router = http::inbound_router(
        startup.message_store(),
        startup.keyword_replies()?,
        startup.authenticator(),
    );
    lambda_http::run(router).await
}
