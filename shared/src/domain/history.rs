//! What happened to a message: one entry per status change.

use time::OffsetDateTime;

use super::Status;

#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub at: OffsetDateTime,
    pub status: Status,
    /// Why the attempt did not succeed (retries and failures).
    pub error: Option<String>,
}
