//! `cargo xtask inspect`: what `redis-cli LRANGE celery 0 -1` was to the old
//! stack — queue depths and the latest messages, read from the emulator.

use anyhow::{Context, Result, bail};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::QueueAttributeName;

use crate::stack::{DLQ_NAME, QUEUE_NAME, TABLE_NAME, aws_config};

pub async fn run(args: &[String]) -> Result<()> {
    let mut endpoint = "http://127.0.0.1:4566".to_owned();
    let mut limit = 20usize;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--endpoint", Some(v)) => endpoint = v.clone(),
            ("--limit", Some(v)) => limit = v.parse().context("--limit takes a number")?,
            _ => bail!("usage: cargo xtask inspect [--endpoint URL] [--limit N]"),
        }
    }
    let aws = aws_config(&endpoint).await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    println!(
        "{:<16} {:>9} {:>10} {:>8}",
        "queue", "visible", "in flight", "delayed"
    );
    for name in [QUEUE_NAME, DLQ_NAME] {
        let url = sqs
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .with_context(|| format!("queue {name} at {endpoint} (is `cargo xtask dev` running?)"))?
            .queue_url
            .unwrap_or_default();
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await?
            .attributes
            .unwrap_or_default();
        let get = |a: QueueAttributeName| attrs.get(&a).cloned().unwrap_or_else(|| "?".into());
        println!(
            "{name:<16} {:>9} {:>10} {:>8}",
            get(QueueAttributeName::ApproximateNumberOfMessages),
            get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        );
    }

    // A development tool may scan; the service never does.
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = dynamodb
            .scan()
            .table_name(TABLE_NAME)
            .filter_expression("begins_with(pk, :msg)")
            .expression_attribute_values(":msg", AttributeValue::S("MSG#".into()))
            .set_exclusive_start_key(start)
            .send()
            .await?;
        items.extend(page.items.unwrap_or_default());
        start = page.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    let text =
        |item: &std::collections::HashMap<String, AttributeValue>, key: &str| match item.get(key) {
            Some(AttributeValue::S(s)) => s.clone(),
            Some(AttributeValue::N(n)) => n.clone(),
            _ => "-".into(),
        };
    items.sort_by_key(|item| std::cmp::Reverse(text(item, "created_at")));
    println!(
        "\n{} messages in {TABLE_NAME}; latest {}:",
        items.len(),
        limit.min(items.len())
    );
    println!(
        "{:<36} {:<8} {:<5} {:<8} {:>3}  last_error",
        "id", "dir", "type", "status", "try"
    );
    for item in items.iter().take(limit) {
        println!(
            "{:<36} {:<8} {:<5} {:<8} {:>3}  {}",
            text(item, "id"),
            text(item, "direction"),
            text(item, "type"),
            text(item, "status"),
            text(item, "attempts"),
            text(item, "last_error"),
        );
    }
    Ok(())
}
