//! What happened to a message: one entry per status change.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::Status;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub status: Status,
    /// Why the attempt did not succeed (retries and failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
