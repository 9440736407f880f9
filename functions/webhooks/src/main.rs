//! The provider webhooks: `POST /webhooks/twilio/{messages,status}` and
//! `POST /webhooks/sendgrid/{inbound,events}`, each verified before use.

use lambda_http::Error;
use shared::{http, startup::Startup};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let webhooks = Startup::init().await?.webhooks().await?;
    lambda_http::run(http::webhooks_router(webhooks)).await
}
