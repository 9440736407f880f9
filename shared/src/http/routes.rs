//! The route table: every route of the API, declared once. The functions'
//! routers are built from it, and `cargo xtask test` holds the `cargo lambda
//! watch` router (`Cargo.toml`), the template's events and `openapi.yaml` to it.

use axum::routing::MethodFilter;

use crate::domain::Scope;

/// The Lambda functions that serve HTTP, by binary name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    Outbound,
    Inbound,
    Read,
    Suppressions,
    Webhooks,
}

impl Function {
    pub const ALL: [Self; 5] = [
        Self::Outbound,
        Self::Inbound,
        Self::Read,
        Self::Suppressions,
        Self::Webhooks,
    ];

    /// The binary (and `cargo lambda watch` function) name.
    pub const fn binary(self) -> &'static str {
        match self {
            Self::Outbound => "outbound",
            Self::Inbound => "inbound",
            Self::Read => "read",
            Self::Suppressions => "suppressions",
            Self::Webhooks => "webhooks",
        }
    }
}

/// One operation of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    SendMessage,
    RecordInbound,
    GetMessage,
    ListConversations,
    GetConversation,
    ListConversationMessages,
    ListSuppressions,
    AddSuppression,
    RemoveSuppression,
    TwilioMessage,
    TwilioStatus,
    SendGridInbound,
    SendGridEvents,
}

/// Where an operation is served and what it requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    /// The path template, axum and API Gateway syntax (`/messages/{id}`).
    pub path: &'static str,
    pub function: Function,
    /// The API key scope required; `None`: the route authenticates its caller
    /// itself (the provider webhooks' signatures and basic auth).
    pub scope: Option<Scope>,
    /// The largest request body taken (413 above it).
    pub max_body: usize,
}

impl Operation {
    pub const ALL: [Self; 13] = [
        Self::SendMessage,
        Self::RecordInbound,
        Self::GetMessage,
        Self::ListConversations,
        Self::GetConversation,
        Self::ListConversationMessages,
        Self::ListSuppressions,
        Self::AddSuppression,
        Self::RemoveSuppression,
        Self::TwilioMessage,
        Self::TwilioStatus,
        Self::SendGridInbound,
        Self::SendGridEvents,
    ];

    /// The route table.
    pub const fn route(self) -> Route {
        use Function::*;
        let (method, path, function, scope) = match self {
            Self::SendMessage => (
                "POST",
                "/messages/outbound",
                Outbound,
                Some(Scope::MessagesSend),
            ),
            Self::RecordInbound => (
                "POST",
                "/messages/inbound",
                Inbound,
                Some(Scope::MessagesInbound),
            ),
            Self::GetMessage => ("GET", "/messages/{id}", Read, Some(Scope::MessagesRead)),
            Self::ListConversations => ("GET", "/conversations", Read, Some(Scope::MessagesRead)),
            Self::GetConversation => (
                "GET",
                "/conversations/{id}",
                Read,
                Some(Scope::MessagesRead),
            ),
            Self::ListConversationMessages => (
                "GET",
                "/conversations/{id}/messages",
                Read,
                Some(Scope::MessagesRead),
            ),
            Self::ListSuppressions => (
                "GET",
                "/suppressions",
                Suppressions,
                Some(Scope::MessagesRead),
            ),
            Self::AddSuppression => (
                "POST",
                "/suppressions",
                Suppressions,
                Some(Scope::SuppressionsWrite),
            ),
            Self::RemoveSuppression => (
                "DELETE",
                "/suppressions/{channel}/{address}",
                Suppressions,
                Some(Scope::SuppressionsWrite),
            ),
            Self::TwilioMessage => ("POST", "/webhooks/twilio/messages", Webhooks, None),
            Self::TwilioStatus => ("POST", "/webhooks/twilio/status", Webhooks, None),
            Self::SendGridInbound => ("POST", "/webhooks/sendgrid/inbound", Webhooks, None),
            Self::SendGridEvents => ("POST", "/webhooks/sendgrid/events", Webhooks, None),
        };
        let max_body = match self {
            Self::SendGridEvents => SENDGRID_EVENTS_MAX_BODY,
            Self::SendGridInbound => SENDGRID_INBOUND_MAX_BODY,
            _ => super::MAX_BODY_BYTES,
        };
        Route {
            method,
            path,
            function,
            scope,
            max_body,
        }
    }
}

/// SendGrid posts Event Webhook batches of up to 768 KB ("every 30 seconds or
/// when the batch size reaches 768 kilobytes"): room for a full one.
pub const SENDGRID_EVENTS_MAX_BODY: usize = 1024 * 1024;

/// An Inbound Parse post as API Gateway can hand it to a function: Lambda takes
/// request payloads of up to 6 MB, and a multipart body arrives base64-encoded
/// (4/3 of its size), so about 4.5 MB of mail; attachments' content is dropped
/// (see `adapters::sendgrid_webhook`).
pub const SENDGRID_INBOUND_MAX_BODY: usize = 4608 * 1024;

impl Route {
    pub(crate) fn method_filter(&self) -> MethodFilter {
        match self.method {
            "GET" => MethodFilter::GET,
            "DELETE" => MethodFilter::DELETE,
            "PUT" => MethodFilter::PUT,
            _ => MethodFilter::POST,
        }
    }

    /// The path and its trailing-slash twin; both are served.
    pub fn paths(&self) -> [String; 2] {
        [self.path.to_owned(), format!("{}/", self.path)]
    }
}

/// Every route, in table order.
pub fn all() -> impl Iterator<Item = (Operation, Route)> {
    Operation::ALL.into_iter().map(|op| (op, op.route()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_route_is_unique_and_only_webhooks_skip_api_keys() {
        let mut seen = HashSet::new();
        for (op, route) in all() {
            assert!(
                seen.insert((route.method, route.path)),
                "{op:?} declared twice"
            );
            assert_eq!(
                route.scope.is_none(),
                route.path.starts_with("/webhooks/"),
                "{op:?}: only webhooks go without an API key"
            );
        }
    }
}
