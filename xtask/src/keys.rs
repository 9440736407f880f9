//! `cargo xtask keys`: create, list and revoke API keys, on the running
//! `cargo xtask dev` stack or (`--aws`) on a deployed one; and the keys every
//! local stack registers at start.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use shared::adapters::dynamodb::DynamoDbStore;
use shared::domain::Scope;
use shared::domain::access::{ApiKey, check_given_key, generate_key, key_hash, key_id};
use shared::ports::ApiKeyAdmin;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::stack::{TABLE_NAME, aws_config};

/// The key the Lambda event fixtures in `events/` carry; only local stacks
/// register it.
pub const FIXTURE_API_KEY: &str =
    "msk_00000000f1c5_local-fixture-key-registered-by-local-stacks-only";
/// `cargo xtask dev`'s own key when `MESSAGING_API_KEY` is not set.
const DEV_KEY_FILE: &str = ".local/dev-api-key";
const LOCAL_ENDPOINT: &str = "http://127.0.0.1:4566";

const USAGE: &str = "\
usage: cargo xtask keys [--endpoint URL | --aws [--table NAME]] <subcommand>

subcommands:
  create [--name NAME] --scopes a,b,...   a new key, printed alone on the last line
                                          (scopes: messages:send, messages:inbound,
                                          messages:read, suppressions:write; all)
  list                                    id, name, scopes, created, last used, revoked
  revoke <key id or key>                  refused everywhere within API_KEY_CACHE_SECONDS

Locally (default) on the `cargo xtask dev` stack's emulator at 127.0.0.1:4566;
--aws: the AWS SDK's default configuration, the table from --table or TABLE_NAME
(the stack's TableName output).";

/// Stores `key` with `scopes` unless it is stored already.
pub async fn register(
    store: &DynamoDbStore,
    key: &str,
    name: &str,
    scopes: &[Scope],
) -> Result<()> {
    let record = ApiKey::new(key, name, scopes, OffsetDateTime::now_utc());
    store
        .create_api_key(&key_hash(key), &record)
        .await
        .map(|_| ())
        .map_err(|e| anyhow!("registering API key {}: {e}", record.key_id))
}

/// Registers a local stack's keys in `table`: `api_key` (handed to the tests and
/// the user) and the event fixtures' key, both with every scope.
pub async fn register_stack_keys(
    client: aws_sdk_dynamodb::Client,
    table: &str,
    api_key: &str,
) -> Result<()> {
    let store = DynamoDbStore::new(client, table);
    register(&store, api_key, "local stack", &Scope::ALL).await?;
    register(&store, FIXTURE_API_KEY, "event fixtures", &Scope::ALL).await
}

/// The development stack's key: `MESSAGING_API_KEY` if set (registered as
/// given), else the one kept in `.local/dev-api-key`, created on first use.
pub fn dev_key(root: &Path) -> Result<String> {
    if let Ok(key) = std::env::var("MESSAGING_API_KEY") {
        check_given_key(&key).map_err(|e| anyhow!("MESSAGING_API_KEY: {e}"))?;
        return Ok(key);
    }
    let path = root.join(DEV_KEY_FILE);
    if let Ok(key) = std::fs::read_to_string(&path) {
        let key = key.trim().to_owned();
        if check_given_key(&key).is_ok() {
            return Ok(key);
        }
    }
    let key = generate_key();
    std::fs::create_dir_all(path.parent().expect("a parent"))?;
    std::fs::write(&path, format!("{key}\n")).with_context(|| path.display().to_string())?;
    Ok(key)
}

struct Args {
    endpoint: Option<String>,
    aws: bool,
    table: Option<String>,
    rest: Vec<String>,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut parsed = Args {
        endpoint: None,
        aws: false,
        table: None,
        rest: Vec::new(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--aws" => parsed.aws = true,
            "--endpoint" => parsed.endpoint = args.next().cloned(),
            "--table" => parsed.table = args.next().cloned(),
            _ => parsed.rest.push(arg.clone()),
        }
    }
    if parsed.aws && parsed.endpoint.is_some() {
        bail!("--aws and --endpoint exclude each other");
    }
    Ok(parsed)
}

async fn connect(args: &Args) -> Result<DynamoDbStore> {
    if args.aws {
        let table = args
            .table
            .clone()
            .or_else(|| std::env::var("TABLE_NAME").ok())
            .ok_or_else(|| {
                anyhow!("--aws needs --table NAME or TABLE_NAME (the stack's TableName output)")
            })?;
        let config = shared::adapters::aws_config().await;
        return Ok(DynamoDbStore::new(
            aws_sdk_dynamodb::Client::new(&config),
            table,
        ));
    }
    let endpoint = args.endpoint.as_deref().unwrap_or(LOCAL_ENDPOINT);
    let table = args.table.clone().unwrap_or_else(|| TABLE_NAME.to_owned());
    Ok(DynamoDbStore::new(
        aws_sdk_dynamodb::Client::new(&aws_config(endpoint).await),
        table,
    ))
}

fn utc(t: Option<OffsetDateTime>) -> String {
    t.and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "-".to_owned())
}

pub async fn command(args: &[String]) -> Result<()> {
    let args = parse(args)?;
    let rest: Vec<&str> = args.rest.iter().map(String::as_str).collect();
    match rest.as_slice() {
        ["create", options @ ..] => {
            let (mut name, mut scopes) = ("api key".to_owned(), None);
            let mut options = options.iter();
            while let Some(option) = options.next() {
                match *option {
                    "--name" => {
                        name = options
                            .next()
                            .ok_or_else(|| anyhow!("--name needs a value"))?
                            .to_string()
                    }
                    "--scopes" => {
                        let list = options
                            .next()
                            .ok_or_else(|| anyhow!("--scopes needs a value"))?;
                        scopes = Some(Scope::parse_list(list).map_err(|e| anyhow!(e))?);
                    }
                    other => bail!("unknown option {other}\n{USAGE}"),
                }
            }
            let scopes = scopes.ok_or_else(|| anyhow!("--scopes is required\n{USAGE}"))?;
            let store = connect(&args).await?;
            let key = generate_key();
            register(&store, &key, &name, &scopes).await?;
            let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
            eprintln!(
                "xtask: created API key {} ({name}; {}); it is shown once:",
                key_id(&key),
                scopes.join(",")
            );
            println!("{key}");
            Ok(())
        }
        ["list"] => {
            let store = connect(&args).await?;
            let keys = store.api_keys().await.map_err(|e| anyhow!("{e}"))?;
            let rows: Vec<Vec<String>> = keys
                .iter()
                .map(|(_, key)| {
                    vec![
                        key.key_id.clone(),
                        key.name.clone(),
                        key.scopes
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                        utc(Some(key.created_at)),
                        utc(key.last_used_at),
                        utc(key.revoked_at),
                    ]
                })
                .collect();
            print!(
                "{}",
                crate::queue::table(
                    &[
                        "key id",
                        "name",
                        "scopes",
                        "created",
                        "last used",
                        "revoked"
                    ],
                    &rows
                )
            );
            Ok(())
        }
        ["revoke", which] => {
            let store = connect(&args).await?;
            let keys = store.api_keys().await.map_err(|e| anyhow!("{e}"))?;
            let hash = key_hash(which);
            let found = keys
                .iter()
                .find(|(h, key)| *h == hash || key.key_id == *which)
                .ok_or_else(|| anyhow!("no API key {which:?} (give its key id or the key)"))?;
            store
                .revoke_api_key(&found.0, OffsetDateTime::now_utc())
                .await
                .map_err(|e| anyhow!("{e}"))?;
            println!(
                "revoked {} ({}); functions refuse it within their key cache time (API_KEY_CACHE_SECONDS, 30 s by default)",
                found.1.key_id, found.1.name
            );
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixture_key_is_a_valid_key_with_a_visible_id() {
        assert!(check_given_key(FIXTURE_API_KEY).is_ok());
        assert_eq!(key_id(FIXTURE_API_KEY), "msk_00000000f1c5");
    }

    #[test]
    fn options_are_read_anywhere_on_the_line() {
        let args: Vec<String> = "--aws create --table t --name ci --scopes all"
            .split(' ')
            .map(str::to_owned)
            .collect();
        let parsed = parse(&args).unwrap();
        assert!(parsed.aws);
        assert_eq!(parsed.table.as_deref(), Some("t"));
        assert_eq!(parsed.rest, ["create", "--name", "ci", "--scopes", "all"]);
    }
}
