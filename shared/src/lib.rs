//! The messaging service's library: the domain (pure rules), the ports it needs,
//! the adapters that implement them on AWS and the providers, and the API and
//! delivery logic the Lambda functions wire together.

pub mod access;
pub mod adapters;
pub mod api;
pub mod compliance;
pub mod config;
pub mod conversations;
pub mod cursor;
pub mod delivery;
pub mod domain;
pub mod http;
pub mod local;
pub mod metrics;
pub mod ports;
pub mod sqs_trigger;
pub mod startup;
pub mod telemetry;
pub mod views;
pub mod webhooks;
