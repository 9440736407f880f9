//! The provider webhooks: `POST /webhooks/twilio/{messages,status}` and
//! `POST /webhooks/sendgrid/{inbound,events}`, each verified before use.

use lambda_http::{Error, Request, service_fn};
use shared::startup::Startup;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let webhooks = Startup::init().await?.webhooks().await?;
    lambda_http::run(service_fn(|request: Request| {
        let webhooks = &webhooks;
        async move { Ok::<_, Error>(webhooks.handle(request).await) }
    }))
    .await
}
