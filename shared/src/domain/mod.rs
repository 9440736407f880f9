//! The messaging domain: pure types and rules, no AWS or HTTP types.

pub mod access;
pub mod breaker;
pub mod conversation;
mod history;
pub mod idempotency;
mod message;
mod report;
mod retry;
mod status;
pub mod suppression;
pub mod validation;

pub use access::Scope;
pub use conversation::{Conversation, ConversationKey, LastMessage};
pub use history::HistoryEntry;
pub use idempotency::IdempotencyKey;
pub use message::{
    Channel, Direction, InboundSource, Message, MessageId, NewMessage, ProviderKind,
};
pub use report::{OptOutSignal, ReportedOutcome, StatusReport};
pub use retry::RetryPolicy;
pub use status::{LeaseRule, Origin, Status, Transition};
pub use suppression::{
    Keyword, Keywords, OptOutPolicy, OptOutScope, Suppression, SuppressionChannel,
    SuppressionSource,
};
pub use validation::{FieldError, validate_inbound, validate_outbound};
