//! The suppression list: `GET /suppressions`, `POST /suppressions` and
//! `DELETE /suppressions/{channel}/{address}` (opt-outs an operator reads,
//! adds or lifts).

use lambda_http::Error;
use shared::{http, startup::Startup};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let startup = Startup::init().await?;
    let router = http::suppressions_router(
        startup.message_store(),
        startup.cursor_codec().await?,
        startup.authenticator(),
    );
    lambda_http::run(router).await
}
