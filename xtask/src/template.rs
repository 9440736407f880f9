//! Reads the table and queues that template.yaml declares, so the local stack
//! creates exactly what AWS would.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde_norway::Value;

pub const TABLE: &str = "MessagesTable";
pub const QUEUE: &str = "MessagesQueue";
pub const DEAD_LETTER_QUEUE: &str = "DeadLetterQueue";

#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    /// (name, type) pairs.
    pub attributes: Vec<(String, String)>,
    /// (name, HASH|RANGE) pairs.
    pub key_schema: Vec<(String, String)>,
    pub global_indexes: Vec<IndexSpec>,
    pub ttl_attribute: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IndexSpec {
    pub name: String,
    pub key_schema: Vec<(String, String)>,
    pub projection: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpec {
    pub visibility_timeout: Option<i64>,
    pub retention_period: Option<i64>,
    /// (logical id of the dead-letter queue, maxReceiveCount).
    pub redrive: Option<(String, i64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Infrastructure {
    pub table: TableSpec,
    pub queue: QueueSpec,
    pub dead_letter_queue: QueueSpec,
}

pub fn load(path: &Path) -> Result<Infrastructure> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text)
}

pub fn parse(text: &str) -> Result<Infrastructure> {
    let doc: Value = serde_norway::from_str(text).context("template.yaml is not valid YAML")?;
    let resources = &doc["Resources"];
    let properties = |id: &str, kind: &str| -> Result<&Value> {
        let resource = &resources[id];
        if resource["Type"].as_str() != Some(kind) {
            bail!("template.yaml: resource {id} must be of type {kind}");
        }
        Ok(&resource["Properties"])
    };
    let table = properties(TABLE, "AWS::DynamoDB::Table")?;
    let queue = properties(QUEUE, "AWS::SQS::Queue")?;
    let dlq = properties(DEAD_LETTER_QUEUE, "AWS::SQS::Queue")?;
    let infra = Infrastructure {
        table: TableSpec {
            attributes: pairs(
                &table["AttributeDefinitions"],
                "AttributeName",
                "AttributeType",
            )?,
            key_schema: pairs(&table["KeySchema"], "AttributeName", "KeyType")?,
            global_indexes: table["GlobalSecondaryIndexes"]
                .as_sequence()
                .map(|indexes| {
                    indexes
                        .iter()
                        .map(|index| {
                            Ok(IndexSpec {
                                name: string(&index["IndexName"], "IndexName")?,
                                key_schema: pairs(&index["KeySchema"], "AttributeName", "KeyType")?,
                                projection: string(
                                    &index["Projection"]["ProjectionType"],
                                    "ProjectionType",
                                )?,
                            })
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .transpose()?
                .unwrap_or_default(),
            ttl_attribute: (table["TimeToLiveSpecification"]["Enabled"].as_bool() == Some(true))
                .then(|| {
                    table["TimeToLiveSpecification"]["AttributeName"]
                        .as_str()
                        .map(str::to_owned)
                })
                .flatten(),
        },
        queue: queue_spec(queue)?,
        dead_letter_queue: queue_spec(dlq)?,
    };
    if infra.table.key_schema.is_empty() {
        bail!("template.yaml: {TABLE} has no KeySchema");
    }
    Ok(infra)
}

fn queue_spec(properties: &Value) -> Result<QueueSpec> {
    let redrive = &properties["RedrivePolicy"];
    let redrive = if redrive.is_null() {
        None
    } else {
        // deadLetterTargetArn: !GetAtt <LogicalId>.Arn
        let target = match &redrive["deadLetterTargetArn"] {
            Value::Tagged(tagged) if tagged.tag == "GetAtt" => {
                tagged.value.as_str().unwrap_or_default().to_owned()
            }
            other => bail!(
                "RedrivePolicy.deadLetterTargetArn must be !GetAtt <Queue>.Arn, got {other:?}"
            ),
        };
        let logical_id = target
            .strip_suffix(".Arn")
            .ok_or_else(|| anyhow!("deadLetterTargetArn {target:?} does not end in .Arn"))?;
        let max = redrive["maxReceiveCount"]
            .as_i64()
            .ok_or_else(|| anyhow!("RedrivePolicy.maxReceiveCount must be a number"))?;
        Some((logical_id.to_owned(), max))
    };
    Ok(QueueSpec {
        visibility_timeout: properties["VisibilityTimeout"].as_i64(),
        retention_period: properties["MessageRetentionPeriod"].as_i64(),
        redrive,
    })
}

fn pairs(list: &Value, key: &str, value: &str) -> Result<Vec<(String, String)>> {
    list.as_sequence()
        .map(|items| {
            items
                .iter()
                .map(|item| Ok((string(&item[key], key)?, string(&item[value], value)?)))
                .collect()
        })
        .unwrap_or_else(|| Ok(Vec::new()))
}

fn string(value: &Value, what: &str) -> Result<String> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("template.yaml: {what} must be a string"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_projects_template() {
        let infra = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml")).unwrap();
        assert_eq!(
            infra.table.key_schema,
            vec![("pk".to_owned(), "HASH".to_owned())]
        );
        assert_eq!(infra.table.ttl_attribute.as_deref(), Some("expires_at"));
        assert_eq!(infra.queue.redrive, Some((DEAD_LETTER_QUEUE.to_owned(), 5)));
        assert_eq!(infra.queue.visibility_timeout, Some(180));
        assert_eq!(infra.dead_letter_queue.redrive, None);
    }

    #[test]
    fn rejects_a_template_without_the_resources() {
        assert!(parse("Resources: {}").is_err());
        let wrong = "Resources:\n  MessagesTable:\n    Type: AWS::SQS::Queue\n";
        assert!(parse(wrong).is_err());
    }
}
