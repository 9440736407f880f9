//! `GET /messages/{id}`: one message with its delivery status and history.

use lambda_http::{Error, Request, service_fn};
use shared::{api, startup::Startup};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let store = Startup::init().await?.message_store();
    lambda_http::run(service_fn(|request: Request| {
        let store = &store;
        async move { Ok::<_, Error>(api::handle_get_message(store, request).await) }
    }))
    .await
}
