//! The read API: `GET /messages/{id}` (one message with its delivery status and
//! history) and the conversation routes (`GET /conversations`,
//! `/conversations/{id}`, `/conversations/{id}/messages`).

use lambda_http::{Error, Request, service_fn};
use shared::{api, conversations, startup::Startup};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let startup = Startup::init().await?;
    let (store, cursors) = (startup.message_store(), startup.cursor_codec());
    lambda_http::run(service_fn(|request: Request| {
        let (store, cursors) = (&store, &cursors);
        async move {
            Ok::<_, Error>(if request.uri().path().starts_with("/conversations") {
                conversations::handle(store, cursors, request).await
            } else {
                api::handle_get_message(store, request).await
            })
        }
    }))
    .await
}
