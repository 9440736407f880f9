//! What every function does once, at cold start: logging, configuration, and the
//! AWS SDK clients (built here, never per request).

use std::sync::Arc;

use aws_config::SdkConfig;

use crate::access::Authenticator;
use crate::api::SendRules;
use crate::compliance::KeywordReplies;
use crate::domain::access::Senders;

use crate::adapters::dynamodb::DynamoDbStore;
use crate::adapters::providers::{Providers, http_client};
use crate::adapters::secrets::{
    load_cursor_key, load_provider_credentials, load_webhook_credentials,
};
use crate::adapters::sqs::SqsQueue;
use crate::config::{Config, ConfigError};
use crate::cursor::CursorCodec;
use crate::delivery::Deliverer;
use crate::telemetry;
use crate::webhooks::Webhooks;

pub struct Startup {
    pub config: Config,
    pub aws: SdkConfig,
}

impl Startup {
    /// Sets up logging, then reads the configuration (failing fast with a message
    /// naming the variable) and the AWS SDK configuration.
    pub async fn init() -> Result<Self, ConfigError> {
        telemetry::init();
        Self::load().await
    }

    /// The configuration and AWS SDK configuration, without touching logging.
    pub async fn load() -> Result<Self, ConfigError> {
        let config = Config::from_env()?;
        let aws = crate::adapters::aws_config().await;
        Ok(Self { config, aws })
    }

    pub fn message_store(&self) -> DynamoDbStore {
        DynamoDbStore::new(
            aws_sdk_dynamodb::Client::new(&self.aws),
            &self.config.table_name,
        )
    }

    pub fn delivery_queue(&self) -> Result<SqsQueue, ConfigError> {
        Ok(SqsQueue::new(
            aws_sdk_sqs::Client::new(&self.aws),
            self.config.require_queue_url()?,
        ))
    }

    /// The delivery logic, with the provider credentials loaded at start-up (from
    /// Secrets Manager, SSM or, locally, the environment) and read again as
    /// [`Providers`] says, and one HTTP client.
    pub async fn deliverer(
        &self,
    ) -> Result<Deliverer<DynamoDbStore, SqsQueue, Providers>, lambda_runtime::Error> {
        let (reader, credentials) = load_provider_credentials(&self.config, &self.aws).await?;
        let client = http_client(self.config.delivery.provider_timeout)?;
        Ok(Deliverer::new(
            self.message_store(),
            self.delivery_queue()?,
            Providers::reading(&self.config, reader, credentials, client),
            self.config.delivery.retry,
            self.config.delivery.lease,
        )
        .with_opt_out_scope(self.config.compliance.scope)
        .with_provider_timeout(self.config.delivery.provider_timeout)
        .with_breaker(
            self.config.delivery.breaker_threshold,
            self.config.delivery.breaker_cooldown,
        ))
    }

    /// API keys, checked against the table with the configured cache time.
    pub fn authenticator(&self) -> Arc<Authenticator<DynamoDbStore>> {
        Arc::new(Authenticator::new(
            self.message_store(),
            self.config.access.key_cache,
        ))
    }

    /// Who may send, and to whom. An empty sender list allows every sender:
    /// fine locally, said loudly on Lambda.
    pub fn send_rules(&self) -> SendRules {
        SendRules {
            senders: self.senders(),
            opt_out_scope: self.config.compliance.scope,
        }
    }

    /// How inbound keywords are answered: the policy, and the queue replies go on.
    pub fn keyword_replies(&self) -> Result<KeywordReplies<SqsQueue>, ConfigError> {
        Ok(KeywordReplies {
            queue: self.delivery_queue()?,
            policy: self.config.compliance.clone(),
        })
    }

    fn senders(&self) -> Senders {
        let senders = self.config.access.allowed_senders.clone();
        if senders.allows_any() && std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
            tracing::warn!(
                "ALLOWED_SENDERS is empty: outbound messages may use any `from`; set the AllowedSenders parameter"
            );
        }
        senders
    }

    /// The key pagination cursors are signed with, read once (from Secrets
    /// Manager on Lambda; a function that pages refuses to start without it).
    pub async fn cursor_codec(&self) -> Result<CursorCodec, ConfigError> {
        Ok(CursorCodec::new(
            &load_cursor_key(&self.config, &self.aws).await?,
        ))
    }

    /// The provider webhooks, with their verification credentials loaded once
    /// from their own secret (not the delivery function's).
    pub async fn webhooks(
        &self,
    ) -> Result<Webhooks<DynamoDbStore, SqsQueue>, lambda_runtime::Error> {
        let (reader, credentials) = load_webhook_credentials(&self.config, &self.aws).await?;
        Ok(Webhooks::new(
            self.message_store(),
            self.keyword_replies()?,
            &credentials,
            &self.config.webhooks,
        )?
        .reading(reader))
    }
}
