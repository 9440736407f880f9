//! Checks on template.yaml that `sam validate --lint` cannot make: each function is
//! allowed exactly the (action, resource) pairs it needs and is triggered exactly as
//! the README says, the queue's redrive and visibility timeout agree with the delivery
//! function, every alarm notifies the alarm topic, and the dashboard shows the custom
//! metrics under the dimensions the functions emit. Tests only.

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    use serde_norway::Value;

    const TABLE: &str = "MessagesTable";
    const QUEUE: &str = "MessagesQueue";
    const DELIVERY: &str = "DeliveryFunction";
    /// The provider credentials' secret: not a template resource (it is created
    /// before deploying), named by the parameter `ProviderSecretName`.
    const PROVIDER_SECRET: &str = "ProviderSecret";
    const PROVIDER_SECRET_PARAMETER: &str = "ProviderSecretName";
    /// The one spelling of that secret's ARN counted as `ProviderSecret`: its name,
    /// then "-" and the six random characters Secrets Manager appends (`??????`, not
    /// `*`, which would match every secret whose name starts the same way).
    const PROVIDER_SECRET_ARN: &str = "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:\
                                       ${AWS::AccountId}:secret:${ProviderSecretName}-??????";
    /// The parameter's pattern: Secrets Manager's name alphabet, so no IAM wildcard
    /// (`*`, `?`) can be passed into the ARN above at deploy time.
    const PROVIDER_SECRET_NAME_PATTERN: &str = "^[A-Za-z0-9/_+=.@-]{1,512}$";
    /// The webhooks' secret, named by the parameter `WebhookSecretName`, in the
    /// same `-??????` spelling.
    const WEBHOOK_SECRET: &str = "WebhookSecret";
    const WEBHOOK_SECRET_ARN: &str = "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:\
                                      ${AWS::AccountId}:secret:${WebhookSecretName}-??????";
    /// The cursor key's secret, a template resource (`!Ref` gives its ARN).
    const CURSOR_SECRET: &str = "CursorSecret";
    /// Credentials and keys as plain environment variables: local development only
    /// (anyone allowed lambda:GetFunctionConfiguration reads a function's variables).
    const ENV_CREDENTIALS: &[&str] = &[
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "SENDGRID_API_KEY",
        "SENDGRID_INBOUND_BASIC_AUTH",
        "CURSOR_SECRET",
    ];

    /// Every (action, logical id of the resource) pair a function may use.
    const EXPECTED_GRANTS: &[(&str, &[(&str, &str)])] = &[
        (
            "OutboundFunction",
            &[
                ("dynamodb:PutItem", TABLE),
                ("dynamodb:GetItem", TABLE),
                ("dynamodb:DeleteItem", TABLE),
                // The conversation summaries.
                ("dynamodb:UpdateItem", TABLE),
                ("sqs:SendMessage", QUEUE),
            ],
        ),
        (
            "InboundFunction",
            &[
                ("dynamodb:PutItem", TABLE),
                ("dynamodb:GetItem", TABLE),
                // Conversation summaries, the suppression list.
                ("dynamodb:UpdateItem", TABLE),
                // A keyword reply whose enqueue failed; an opt-in's emptied entry.
                ("dynamodb:DeleteItem", TABLE),
                // Keyword replies are queued for delivery.
                ("sqs:SendMessage", QUEUE),
            ],
        ),
        (
            "SuppressionsFunction",
            &[
                ("dynamodb:GetItem", TABLE),
                // Entries added and lifted; API keys' last use.
                ("dynamodb:UpdateItem", TABLE),
                // An address's last entry.
                ("dynamodb:DeleteItem", TABLE),
                // The list index, no other (and no Scan).
                (
                    "dynamodb:Query",
                    "!Sub ${MessagesTable.Arn}/index/suppression-list",
                ),
                // The key cursors are signed with.
                ("secretsmanager:GetSecretValue", CURSOR_SECRET),
            ],
        ),
        (
            "ReadFunction",
            &[
                ("dynamodb:GetItem", TABLE),
                // API keys' last use.
                ("dynamodb:UpdateItem", TABLE),
                // The two conversation indexes, no other (and no Scan).
                (
                    "dynamodb:Query",
                    "!Sub ${MessagesTable.Arn}/index/conversation-messages",
                ),
                (
                    "dynamodb:Query",
                    "!Sub ${MessagesTable.Arn}/index/participant-conversations",
                ),
                // The key cursors are signed with.
                ("secretsmanager:GetSecretValue", CURSOR_SECRET),
            ],
        ),
        (
            "WebhooksFunction",
            &[
                ("dynamodb:GetItem", TABLE),
                ("dynamodb:PutItem", TABLE),
                ("dynamodb:UpdateItem", TABLE),
                // A keyword reply whose enqueue failed; an opt-in's emptied entry.
                ("dynamodb:DeleteItem", TABLE),
                // Keyword replies are queued for delivery.
                ("sqs:SendMessage", QUEUE),
                // The Twilio auth token that webhook signatures are checked with and
                // the Inbound Parse credentials: not the provider secret.
                ("secretsmanager:GetSecretValue", WEBHOOK_SECRET),
            ],
        ),
        (
            DELIVERY,
            &[
                ("dynamodb:GetItem", TABLE),
                ("dynamodb:UpdateItem", TABLE),
                // The provider's message id, written with the sent status.
                ("dynamodb:PutItem", TABLE),
                // The event source mapping polls with the function's role: what
                // AWSLambdaSQSQueueExecutionRole would grant, on this queue only.
                ("sqs:ReceiveMessage", QUEUE),
                ("sqs:DeleteMessage", QUEUE),
                ("sqs:GetQueueAttributes", QUEUE),
                // Retries are scheduled by changing the message's visibility.
                ("sqs:ChangeMessageVisibility", QUEUE),
                // On the last receive the queue allows, a message still to be retried
                // is handed over to a new queue message.
                ("sqs:SendMessage", QUEUE),
                // The provider credentials, read once per cold start.
                ("secretsmanager:GetSecretValue", PROVIDER_SECRET),
            ],
        ),
    ];

    /// Every function's triggers, as `describe_event` writes them (README: API, layout).
    /// Each function's triggers: the HTTP routes come from the route table
    /// (`shared::http::routes`), the delivery function's queue is fixed here.
    fn expected_events() -> Vec<(String, BTreeSet<String>)> {
        let mut events: Vec<(String, BTreeSet<String>)> = shared::http::Function::ALL
            .into_iter()
            .map(|function| {
                let binary = function.binary();
                let id = format!("{}{}Function", binary[..1].to_uppercase(), &binary[1..]);
                let routes = shared::http::routes::all()
                    .filter(|(_, route)| route.function == function)
                    .map(|(_, route)| format!("HttpApi {} {}", route.method, route.path))
                    .collect();
                (id, routes)
            })
            .collect();
        events.push((
            DELIVERY.to_owned(),
            ["SQS MessagesQueue FunctionResponseTypes=[ReportBatchItemFailures]".to_owned()].into(),
        ));
        events
    }

    const EXPECTED_ALARMS: &[&str] = &[
        "DeadLetterQueueNotEmpty",
        "QueueBacklogOld",
        "DeliveryErrors",
        "DeliveryThrottles",
        "Api5xxRate",
        "FailedPermanentlyRate",
        "ProviderCircuitOpen",
        "ProviderAuthFailed",
    ];

    /// The custom metrics (namespace Messaging) and the dimension sets each is
    /// emitted with besides ["Service"].
    const CUSTOM_METRICS: &[(&str, Option<&str>)] = &[
        ("MessagesAccepted", Some("Channel")),
        ("ValidationRejected", None),
        ("MessagesDelivered", Some("Channel")),
        ("DeliveryRetried", Some("Reason")),
        ("MessagesFailed", Some("Channel")),
        ("ProviderLatency", Some("Provider")),
        ("MessageAgeAtDelivery", None),
        ("BatchSize", None),
        ("BatchFailures", None),
        ("ConversationSummaryFailed", None),
        ("WebhookRejected", Some("Provider")),
        ("ReportsApplied", Some("Provider")),
        ("MessagesSuppressed", None),
        ("SuppressionsAdded", Some("Source")),
        ("CircuitOpened", Some("Provider")),
        ("ProviderAuthFailed", Some("Provider")),
        ("InboundEmailUnverified", None),
    ];

    type Grants = BTreeSet<(String, String)>;

    /// The item actions on the table and the key prefixes each is limited to
    /// (`dynamodb:LeadingKeys`); `*` where a statement allows any key.
    type Keys = BTreeMap<String, BTreeSet<String>>;

    /// The item actions on the table each function may use, and on which key
    /// prefixes (README, "Stored ids"; the item types in
    /// shared/src/adapters/dynamodb/mod.rs). The outbound function cannot touch
    /// inbound guards or provider ids, the read function writes only a key's last
    /// use, delivery cannot touch API keys.
    /// (action, key prefixes) of one function.
    type ActionKeys = &'static [(&'static str, &'static [&'static str])];

    const EXPECTED_KEYS: &[(&str, ActionKeys)] = &[
        (
            "OutboundFunction",
            &[
                (
                    "dynamodb:GetItem",
                    &["APIKEY", "SUPPRESSION", "IDEMPOTENCY"],
                ),
                ("dynamodb:PutItem", &["MSG", "IDEMPOTENCY"]),
                ("dynamodb:DeleteItem", &["MSG", "IDEMPOTENCY"]),
                (
                    "dynamodb:UpdateItem",
                    &["APIKEY", "IDEMPOTENCY", "CONV", "CONVPART"],
                ),
            ],
        ),
        (
            "InboundFunction",
            &[
                (
                    "dynamodb:GetItem",
                    &["APIKEY", "INBOUND", "MSG", "SUPPRESSION", "IDEMPOTENCY"],
                ),
                ("dynamodb:PutItem", &["INBOUND", "MSG", "IDEMPOTENCY"]),
                (
                    "dynamodb:UpdateItem",
                    &["APIKEY", "CONV", "CONVPART", "SUPPRESSION", "IDEMPOTENCY"],
                ),
                (
                    "dynamodb:DeleteItem",
                    &["MSG", "IDEMPOTENCY", "SUPPRESSION"],
                ),
            ],
        ),
        (
            "ReadFunction",
            &[
                ("dynamodb:GetItem", &["APIKEY", "MSG", "CONV"]),
                ("dynamodb:UpdateItem", &["APIKEY"]),
            ],
        ),
        (
            "SuppressionsFunction",
            &[
                ("dynamodb:GetItem", &["APIKEY", "SUPPRESSION"]),
                ("dynamodb:UpdateItem", &["APIKEY", "SUPPRESSION"]),
                ("dynamodb:DeleteItem", &["SUPPRESSION"]),
            ],
        ),
        (
            "WebhooksFunction",
            &[
                (
                    "dynamodb:GetItem",
                    &[
                        "INBOUND",
                        "MSG",
                        "SUPPRESSION",
                        "IDEMPOTENCY",
                        "PROVIDER",
                        "EVENT",
                    ],
                ),
                (
                    "dynamodb:PutItem",
                    &["INBOUND", "MSG", "IDEMPOTENCY", "EVENT"],
                ),
                (
                    "dynamodb:UpdateItem",
                    &["MSG", "CONV", "CONVPART", "SUPPRESSION", "IDEMPOTENCY"],
                ),
                (
                    "dynamodb:DeleteItem",
                    &["MSG", "IDEMPOTENCY", "SUPPRESSION"],
                ),
            ],
        ),
        (
            DELIVERY,
            &[
                ("dynamodb:GetItem", &["MSG", "SUPPRESSION"]),
                ("dynamodb:UpdateItem", &["MSG", "SUPPRESSION"]),
                ("dynamodb:PutItem", &["PROVIDER"]),
            ],
        ),
    ];

    fn expected_keys(function: &str) -> Keys {
        EXPECTED_KEYS
            .iter()
            .find(|(id, _)| *id == function)
            .map(|(_, actions)| {
                actions
                    .iter()
                    .map(|(action, prefixes)| {
                        (
                            (*action).to_owned(),
                            prefixes.iter().map(|p| format!("{p}#*")).collect(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    // ---- reading the template ------------------------------------------------------

    fn template() -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        serde_norway::from_str(&text).expect("template.yaml is not valid YAML")
    }

    fn yaml(text: &str) -> Value {
        serde_norway::from_str(text).unwrap_or_else(|e| panic!("bad YAML {text:?}: {e}"))
    }

    /// (logical id, resource) of every resource.
    fn resources(doc: &Value) -> Vec<(&str, &Value)> {
        doc["Resources"]
            .as_mapping()
            .into_iter()
            .flatten()
            .filter_map(|(id, resource)| Some((id.as_str()?, resource)))
            .collect()
    }

    fn kind(resource: &Value) -> &str {
        resource["Type"].as_str().unwrap_or_default()
    }

    /// An intrinsic function in either spelling: `!GetAtt x` or `{"Fn::GetAtt": x}`
    /// gives `("GetAtt", x)`; `!Ref x` or `{"Ref": x}` gives `("Ref", x)`.
    fn intrinsic(value: &Value) -> Option<(&str, &Value)> {
        match value {
            Value::Tagged(tagged) => {
                let tag = tagged.tag.to_string();
                let name = tag.trim_start_matches('!');
                [
                    "Ref",
                    "GetAtt",
                    "Sub",
                    "If",
                    "Join",
                    "Select",
                    "ImportValue",
                ]
                .into_iter()
                .find(|known| *known == name)
                .map(|known| (known, &tagged.value))
            }
            Value::Mapping(map) if map.len() == 1 => {
                let (key, inner) = map.iter().next()?;
                let key = key.as_str()?;
                let name = key.strip_prefix("Fn::").or((key == "Ref").then_some(key))?;
                Some((name, inner))
            }
            _ => None,
        }
    }

    /// `!GetAtt Id.Attr` (or `[Id, Attr]`) as (Id, Attr).
    fn get_att(value: &Value) -> Option<(String, String)> {
        match intrinsic(value)? {
            ("GetAtt", Value::String(dotted)) => {
                let (id, attribute) = dotted.split_once('.')?;
                Some((id.to_owned(), attribute.to_owned()))
            }
            ("GetAtt", Value::Sequence(parts)) if parts.len() == 2 => {
                Some((parts[0].as_str()?.to_owned(), parts[1].as_str()?.to_owned()))
            }
            _ => None,
        }
    }

    /// A plain (untagged) string.
    fn plain_str(value: &Value) -> Option<&str> {
        match value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// A number, or a string holding one (CloudFormation accepts both).
    fn integer(value: &Value) -> Option<i64> {
        match value {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// A string or a list of strings, as IAM allows for Action.
    fn one_or_many(value: &Value) -> Option<Vec<&Value>> {
        match value {
            Value::Sequence(items) => Some(items.iter().collect()),
            Value::Null => None,
            single => Some(vec![single]),
        }
    }

    fn properties<'a>(doc: &'a Value, id: &str) -> &'a Value {
        &doc["Resources"][id]["Properties"]
    }

    fn expected_grants(function: &str) -> Grants {
        EXPECTED_GRANTS
            .iter()
            .find(|(id, _)| *id == function)
            .map(|(_, pairs)| {
                pairs
                    .iter()
                    .map(|(action, resource)| ((*action).to_owned(), (*resource).to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn show(grants: &Grants) -> String {
        grants
            .iter()
            .map(|(action, resource)| format!("{action} on {resource}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    // ---- least privilege -----------------------------------------------------------

    /// What `function`'s `Policies` allow, as (action, resource) pairs. Anything that
    /// could allow more than its statements say (a managed policy, a SAM policy
    /// template, a wildcard, NotAction, a literal ARN, a Role) is a problem.
    fn grants(doc: &Value, function: &str, problems: &mut Vec<String>) -> (Grants, Keys) {
        let mut grants = Grants::new();
        let mut keys = Keys::new();
        let props = properties(doc, function);
        for key in ["Role", "PermissionsBoundary"] {
            if !props[key].is_null() {
                problems.push(format!(
                    "{function}: {key} is set; only the function's own inline Policies are allowed \
                     (a Role replaces them, and its permissions are not checked here)"
                ));
            }
        }
        let policies = match &props["Policies"] {
            Value::Null => return (grants, keys),
            Value::Sequence(items) => items.iter().collect(),
            single => vec![single],
        };
        for policy in policies {
            let statements = match policy {
                Value::Mapping(map) if intrinsic(policy).is_none() => {
                    let mut statements = None;
                    for (key, value) in map {
                        match key.as_str() {
                            Some("Statement") => statements = one_or_many(value),
                            Some("Version") => {}
                            other => problems.push(format!(
                                "{function}: SAM policy template {} is used; write explicit \
                                 Statements instead (a template's permissions can widen \
                                 silently)",
                                other.unwrap_or("?")
                            )),
                        }
                    }
                    statements.unwrap_or_default()
                }
                other => {
                    let name = plain_str(other).map_or_else(|| format!("{other:?}"), str::to_owned);
                    problems.push(format!(
                        "{function}: managed policy (or intrinsic) {name} is attached; write \
                         explicit Statements instead (a managed policy can widen silently)"
                    ));
                    continue;
                }
            };
            for statement in statements {
                statement_grants(function, statement, doc, &mut grants, &mut keys, problems);
            }
        }
        (grants, keys)
    }

    /// A statement's `dynamodb:LeadingKeys` prefixes: `None` without a
    /// condition; anything but that one condition in its one safe form
    /// (ForAllValues:StringLike, so every key of a batch must match) is a problem.
    fn leading_keys(
        function: &str,
        statement: &Value,
        problems: &mut Vec<String>,
    ) -> Option<BTreeSet<String>> {
        let condition = &statement["Condition"];
        if condition.is_null() {
            return None;
        }
        let shape = condition
            .as_mapping()
            .filter(|m| m.len() == 1)
            .and_then(|_| condition["ForAllValues:StringLike"].as_mapping())
            .filter(|m| m.len() == 1)
            .and_then(|m| m.get("dynamodb:LeadingKeys"))
            .and_then(one_or_many);
        let Some(values) = shape else {
            problems.push(format!(
                "{function}: a condition {condition:?} is not ForAllValues:StringLike on \
                 dynamodb:LeadingKeys alone (ForAnyValue or other keys can widen it)"
            ));
            return Some(BTreeSet::from(["*".to_owned()]));
        };
        Some(
            values
                .into_iter()
                .map(|v| plain_str(v).unwrap_or("?").to_owned())
                .collect(),
        )
    }

    fn statement_grants(
        function: &str,
        statement: &Value,
        doc: &Value,
        grants: &mut Grants,
        keys: &mut Keys,
        problems: &mut Vec<String>,
    ) {
        let Some(map) = statement
            .as_mapping()
            .filter(|_| intrinsic(statement).is_none())
        else {
            problems.push(format!(
                "{function}: statement {statement:?} is not a mapping"
            ));
            return;
        };
        for key in map.keys() {
            let key = key.as_str().unwrap_or("?");
            if !["Sid", "Effect", "Action", "Resource", "Condition"].contains(&key) {
                problems.push(format!(
                    "{function}: a statement uses {key}; only Effect, Action, Resource and a \
                     LeadingKeys Condition are allowed (NotAction/NotResource widen, and this \
                     test cannot check the rest)"
                ));
            }
        }
        if plain_str(&statement["Effect"]) != Some("Allow") {
            problems.push(format!(
                "{function}: a statement has Effect {:?}; only Allow statements are expected",
                statement["Effect"]
            ));
        }
        let declared = one_or_many(&statement["Action"]).unwrap_or_default();
        if declared.is_empty() {
            problems.push(format!("{function}: a statement has no Action"));
        }
        let mut actions = Vec::new();
        for action in declared {
            match plain_str(action) {
                Some(a) if a.contains('*') => problems.push(format!(
                    "{function}: wildcard action {a:?}; list the actions the code calls"
                )),
                Some(a) => actions.push(a.to_owned()),
                None => problems.push(format!(
                    "{function}: action {action:?} is not a plain string"
                )),
            }
        }
        let declared = one_or_many(&statement["Resource"]).unwrap_or_default();
        if declared.is_empty() {
            problems.push(format!("{function}: a statement has no Resource"));
        }
        let mut targets = Vec::new();
        for resource in declared {
            match resource_id(resource, doc) {
                Ok(id) => targets.push(id),
                Err(why) => problems.push(format!("{function}: {why}")),
            }
        }
        let prefixes = leading_keys(function, statement, problems);
        for action in &actions {
            for target in &targets {
                grants.insert((action.clone(), target.clone()));
                if target == TABLE && action.starts_with("dynamodb:") {
                    keys.entry(action.clone()).or_default().extend(
                        prefixes
                            .clone()
                            .unwrap_or_else(|| BTreeSet::from(["*".to_owned()])),
                    );
                } else if prefixes.is_some() {
                    problems.push(format!(
                        "{function}: a LeadingKeys condition on {action} on {target}, which has \
                         no such keys"
                    ));
                }
            }
        }
    }

    /// The logical id a Resource entry names: `!GetAtt MessagesTable.Arn` → MessagesTable,
    /// and `!Sub` of `PROVIDER_SECRET_ARN` exactly → ProviderSecret. `*` and `?` are
    /// IAM wildcards.
    fn resource_id(resource: &Value, doc: &Value) -> Result<String, String> {
        if let Some((id, attribute)) = get_att(resource) {
            if attribute != "Arn" {
                return Err(format!("resource !GetAtt {id}.{attribute} is not an ARN"));
            }
            if doc["Resources"][id.as_str()].is_null() {
                return Err(format!("resource {id} is not in the template"));
            }
            return Ok(id);
        }
        match (intrinsic(resource), plain_str(resource)) {
            (Some(("Ref", Value::String(id))), _)
                if kind(&doc["Resources"][id.as_str()]) == "AWS::SecretsManager::Secret" =>
            {
                // A secret's Ref is its ARN.
                Ok(id.clone())
            }
            (Some(("Sub", Value::String(text))), _) => {
                if text == PROVIDER_SECRET_ARN {
                    return Ok(PROVIDER_SECRET.to_owned());
                }
                if text == WEBHOOK_SECRET_ARN {
                    return Ok(WEBHOOK_SECRET.to_owned());
                }
                if text.contains(['*', '?']) {
                    return Err(format!("wildcard resource !Sub {text:?}"));
                }
                // "${MessagesTable.Arn}" alone is the table; anything longer (an index,
                // a key prefix) is listed literally, so it is never taken for the table.
                match text
                    .strip_prefix("${")
                    .and_then(|t| t.strip_suffix(".Arn}"))
                    .filter(|id| !id.contains(['$', '{', '}', '/']))
                {
                    Some(id) => Ok(id.to_owned()),
                    None => Ok(format!("!Sub {text}")),
                }
            }
            (_, Some(text)) if text.contains(['*', '?']) => Err(format!(
                "wildcard resource {text:?}; name the template's resource with !GetAtt <Id>.Arn"
            )),
            (_, Some(text)) => Err(format!(
                "literal resource {text:?}; name the template's resource with !GetAtt <Id>.Arn"
            )),
            _ => Err(format!(
                "resource {resource:?} is not !GetAtt <Id>.Arn of a template resource"
            )),
        }
    }

    fn lambda_functions(doc: &Value) -> BTreeSet<&str> {
        resources(doc)
            .into_iter()
            .filter(|(_, r)| {
                matches!(
                    kind(r),
                    "AWS::Serverless::Function" | "AWS::Lambda::Function"
                )
            })
            .map(|(id, _)| id)
            .collect()
    }

    fn permission_problems(doc: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        let expected_functions: BTreeSet<&str> =
            EXPECTED_GRANTS.iter().map(|(id, _)| *id).collect();
        let functions = lambda_functions(doc);
        if functions != expected_functions {
            problems.push(format!(
                "the template's functions are {functions:?}, expected {expected_functions:?}: \
                 add a new function's exact permissions to EXPECTED_GRANTS"
            ));
        }
        for (id, resource) in resources(doc) {
            let t = kind(resource);
            if t.starts_with("AWS::IAM::") || t == "AWS::Serverless::Connector" {
                problems.push(format!(
                    "resource {id} of type {t} can grant permissions outside the functions' \
                     Policies"
                ));
            }
            if !resource["Connectors"].is_null() {
                problems.push(format!(
                    "resource {id} has Connectors, which add IAM policies outside the \
                     functions' Policies"
                ));
            }
        }
        for key in ["Policies", "Role", "PermissionsBoundary"] {
            if !doc["Globals"]["Function"][key].is_null() {
                problems.push(format!(
                    "Globals.Function.{key} is set; permissions belong to each function"
                ));
            }
        }
        for function in functions.union(&expected_functions) {
            let (actual, keys) = grants(doc, function, &mut problems);
            let expected_keys = expected_keys(function);
            for (action, prefixes) in &keys {
                let wanted = expected_keys.get(action).cloned().unwrap_or_default();
                if prefixes.contains("*") {
                    problems.push(format!(
                        "{function}: {action} on {TABLE} on any key; limit it with \
                         dynamodb:LeadingKeys to {wanted:?}"
                    ));
                } else if *prefixes != wanted {
                    problems.push(format!(
                        "{function}: {action} on {TABLE} on the keys {prefixes:?}, expected \
                         {wanted:?}"
                    ));
                }
            }
            let expected = expected_grants(function);
            let extra: Grants = actual.difference(&expected).cloned().collect();
            let missing: Grants = expected.difference(&actual).cloned().collect();
            if !extra.is_empty() {
                problems.push(format!(
                    "{function} allows more than expected: {}",
                    show(&extra)
                ));
            }
            if !missing.is_empty() {
                problems.push(format!(
                    "{function} lacks what its code needs: {}",
                    show(&missing)
                ));
            }
        }
        problems
    }

    // ---- provider credentials ----------------------------------------------------------

    /// The delivery function reads the secret its policy names (or an SSM path
    /// instead), the secret's name cannot widen that policy, and no credential is
    /// passed as an environment variable (those are for local development only).
    fn credential_problems(doc: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        let secret_id = environment(doc, DELIVERY, "PROVIDER_SECRET_ID");
        let path = environment(doc, DELIVERY, "PROVIDER_PARAMETER_PATH");
        if secret_id.is_null() && path.is_null() {
            problems.push(format!(
                "{DELIVERY} sets neither PROVIDER_SECRET_ID nor PROVIDER_PARAMETER_PATH: it \
                 would start without provider credentials"
            ));
        } else if !secret_id.is_null()
            && !matches!(intrinsic(secret_id), Some(("Ref", Value::String(p))) if p == PROVIDER_SECRET_PARAMETER)
        {
            problems.push(format!(
                "{DELIVERY}: PROVIDER_SECRET_ID is {secret_id:?}, expected \
                 !Ref {PROVIDER_SECRET_PARAMETER} (the secret its policy allows reading)"
            ));
        }
        let parameter = &doc["Parameters"][PROVIDER_SECRET_PARAMETER];
        if !parameter.is_null()
            && plain_str(&parameter["AllowedPattern"]) != Some(PROVIDER_SECRET_NAME_PATTERN)
        {
            problems.push(format!(
                "parameter {PROVIDER_SECRET_PARAMETER}: AllowedPattern is {:?}, expected \
                 {PROVIDER_SECRET_NAME_PATTERN:?} so that no wildcard can reach the secret's ARN \
                 in {DELIVERY}'s policy",
                parameter["AllowedPattern"]
            ));
        }
        let webhook_secret = environment(doc, "WebhooksFunction", "WEBHOOK_SECRET_ID");
        if !matches!(intrinsic(webhook_secret), Some(("Ref", Value::String(p))) if p == "WebhookSecretName")
        {
            problems.push(format!(
                "WebhooksFunction: WEBHOOK_SECRET_ID is {webhook_secret:?}, expected \
                 !Ref WebhookSecretName (the secret its policy allows reading)"
            ));
        }
        if plain_str(&doc["Parameters"]["WebhookSecretName"]["AllowedPattern"])
            != Some(PROVIDER_SECRET_NAME_PATTERN)
        {
            problems.push(format!(
                "parameter WebhookSecretName: AllowedPattern is not {PROVIDER_SECRET_NAME_PATTERN:?}"
            ));
        }
        for function in ["ReadFunction", "SuppressionsFunction"] {
            let cursor = environment(doc, function, "CURSOR_SECRET_ID");
            if !matches!(intrinsic(cursor), Some(("Ref", Value::String(id))) if id == CURSOR_SECRET)
            {
                problems.push(format!(
                    "{function}: CURSOR_SECRET_ID is {cursor:?}, expected !Ref {CURSOR_SECRET}"
                ));
            }
        }
        let mut scopes: Vec<(String, &Value)> = lambda_functions(doc)
            .into_iter()
            .map(|f| {
                (
                    f.to_owned(),
                    &properties(doc, f)["Environment"]["Variables"],
                )
            })
            .collect();
        scopes.push((
            "Globals.Function".to_owned(),
            &doc["Globals"]["Function"]["Environment"]["Variables"],
        ));
        for (scope, variables) in scopes {
            for name in ENV_CREDENTIALS {
                if !variables[*name].is_null() {
                    problems.push(format!(
                        "{scope}: environment variable {name} is set; credentials and keys \
                         come from Secrets Manager at start-up"
                    ));
                }
            }
            // A dynamic reference puts the secret's value into the function's
            // configuration, where GetFunctionConfiguration shows it.
            let text = serde_norway::to_string(variables).unwrap_or_default();
            if text.contains("{{resolve:") {
                problems.push(format!(
                    "{scope}: an environment variable resolves a secret ({{{{resolve:…}}}}); \
                     pass the secret's name and read it at start-up"
                ));
            }
        }
        problems
    }

    // ---- triggers ------------------------------------------------------------------

    fn describe_event(event: &Value) -> String {
        let props = &event["Properties"];
        match event["Type"].as_str() {
            Some("HttpApi") => {
                let mut text = format!(
                    "HttpApi {} {}",
                    props["Method"].as_str().unwrap_or("?").to_uppercase(),
                    props["Path"].as_str().unwrap_or("?")
                );
                if !matches!(intrinsic(&props["ApiId"]), Some(("Ref", Value::String(api))) if api == "HttpApi")
                {
                    text += &format!(" (ApiId {:?}, not !Ref HttpApi)", props["ApiId"]);
                }
                text
            }
            // SAM's SQS event, or the event source mapping written out (which
            // keeps SAM from attaching AWSLambdaSQSQueueExecutionRole).
            Some(kind @ ("SQS" | "AWS::Lambda::EventSourceMapping")) => {
                let arn = if kind == "SQS" {
                    &props["Queue"]
                } else {
                    &props["EventSourceArn"]
                };
                let queue = get_att(arn)
                    .filter(|(_, attribute)| attribute == "Arn")
                    .map_or_else(|| format!("{arn:?}"), |(id, _)| id);
                let types = one_or_many(&props["FunctionResponseTypes"])
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| t.as_str().unwrap_or("?"))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("SQS {queue} FunctionResponseTypes=[{types}]")
            }
            other => format!("{} {props:?}", other.unwrap_or("?")),
        }
    }

    fn event_problems(doc: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        let functions = lambda_functions(doc);
        let expected_events = expected_events();
        let expected_functions: BTreeSet<&str> =
            expected_events.iter().map(|(id, _)| id.as_str()).collect();
        for function in functions.union(&expected_functions) {
            let mappings = resources(doc).into_iter().filter(|(_, r)| {
                kind(r) == "AWS::Lambda::EventSourceMapping"
                    && matches!(intrinsic(&r["Properties"]["FunctionName"]),
                                Some(("Ref", Value::String(f))) if f == function)
            });
            let actual: BTreeSet<String> = properties(doc, function)["Events"]
                .as_mapping()
                .into_iter()
                .flatten()
                .map(|(_, event)| event)
                .chain(mappings.map(|(_, mapping)| mapping))
                .map(describe_event)
                .collect();
            let expected: BTreeSet<String> = expected_events
                .iter()
                .find(|(id, _)| id == function)
                .map(|(_, events)| events.clone())
                .unwrap_or_default();
            if actual != expected {
                problems.push(format!(
                    "{function} is triggered by {actual:?}, the route table says {expected:?}"
                ));
            }
        }
        problems
    }

    // ---- queue vs delivery function --------------------------------------------------

    fn environment<'a>(doc: &'a Value, function: &str, name: &str) -> &'a Value {
        match &properties(doc, function)["Environment"]["Variables"][name] {
            Value::Null => &doc["Globals"]["Function"]["Environment"]["Variables"][name],
            value => value,
        }
    }

    fn redrive_problems(doc: &Value) -> Vec<String> {
        let max_receive = &properties(doc, QUEUE)["RedrivePolicy"]["maxReceiveCount"];
        let env = environment(doc, DELIVERY, "MAX_RECEIVE_COUNT");
        match (integer(max_receive), integer(env)) {
            (Some(queue), Some(function)) if queue == function => Vec::new(),
            (Some(queue), Some(function)) => vec![format!(
                "{QUEUE} RedrivePolicy.maxReceiveCount is {queue} but {DELIVERY} has \
                 MAX_RECEIVE_COUNT={function}: the function must know which receive is the \
                 last one"
            )],
            (queue, function) => vec![format!(
                "{QUEUE} RedrivePolicy.maxReceiveCount ({queue:?}) and {DELIVERY}'s \
                 MAX_RECEIVE_COUNT ({function:?}) must both be set to the same number"
            )],
        }
    }

    fn visibility_problems(doc: &Value) -> Vec<String> {
        // Defaults when unset: SQS 30 s, SAM/Lambda 3 s.
        let visibility = integer(&properties(doc, QUEUE)["VisibilityTimeout"]).unwrap_or(30);
        let timeout = integer(&properties(doc, DELIVERY)["Timeout"])
            .or_else(|| integer(&doc["Globals"]["Function"]["Timeout"]))
            .unwrap_or(3);
        if visibility >= 6 * timeout {
            Vec::new()
        } else {
            vec![format!(
                "{QUEUE} VisibilityTimeout is {visibility} s, less than 6 × {DELIVERY} Timeout \
                 ({timeout} s) = {} s: a batch still running could be received again",
                6 * timeout
            )]
        }
    }

    // ---- alarms and dashboard --------------------------------------------------------

    fn alarm_problems(doc: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        let notify = yaml("!If [HasAlarmTopic, [!Ref AlarmTopicArn], !Ref AWS::NoValue]");
        let alarms: Vec<(&str, &Value)> = resources(doc)
            .into_iter()
            .filter(|(_, r)| kind(r) == "AWS::CloudWatch::Alarm")
            .collect();
        for expected in EXPECTED_ALARMS {
            if !alarms.iter().any(|(id, _)| id == expected) {
                problems.push(format!("alarm {expected} is missing"));
            }
        }
        for (id, alarm) in alarms {
            let props = &alarm["Properties"];
            for key in ["AlarmActions", "OKActions"] {
                if props[key] != notify {
                    problems.push(format!(
                        "alarm {id}: {key} is {:?}, expected !If [HasAlarmTopic, \
                         [!Ref AlarmTopicArn], !Ref AWS::NoValue]",
                        props[key]
                    ));
                }
            }
            let description = props["AlarmDescription"].as_str().unwrap_or_default();
            if description.split_whitespace().count() < 15 {
                problems.push(format!(
                    "alarm {id}: AlarmDescription {description:?} must say what the alarm \
                     means and what to do"
                ));
            }
        }
        problems
    }

    /// The dashboard body with every `${...}` replaced by a placeholder.
    fn dashboard_json(doc: &Value) -> Result<serde_json::Value, String> {
        let body = resources(doc)
            .into_iter()
            .find(|(_, r)| kind(r) == "AWS::CloudWatch::Dashboard")
            .map(|(_, r)| &r["Properties"]["DashboardBody"])
            .ok_or("no AWS::CloudWatch::Dashboard")?;
        let text = match intrinsic(body) {
            Some(("Sub", Value::String(text))) => text.as_str(),
            _ => plain_str(body).ok_or("DashboardBody is neither a string nor !Sub <string>")?,
        };
        let mut plain = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            let end = rest[start..]
                .find('}')
                .ok_or("unterminated ${ in DashboardBody")?;
            plain.push_str(&rest[..start]);
            plain.push_str("placeholder");
            rest = &rest[start + end + 1..];
        }
        plain.push_str(rest);
        serde_json::from_str(&plain).map_err(|e| format!("DashboardBody is not JSON: {e}"))
    }

    fn dashboard_problems(doc: &Value) -> Vec<String> {
        let body = match dashboard_json(doc) {
            Ok(body) => body,
            Err(e) => return vec![e],
        };
        let mut problems = Vec::new();
        let mut shown = BTreeSet::new();
        let widgets = body["widgets"].as_array().cloned().unwrap_or_default();
        for widget in &widgets {
            let title = widget["properties"]["title"].as_str().unwrap_or("?");
            let mut previous: Vec<String> = Vec::new();
            for row in widget["properties"]["metrics"]
                .as_array()
                .into_iter()
                .flatten()
            {
                // [namespace, name, dim, value, ..., {options}]; "." repeats the row above.
                let Some(items) = row.as_array() else {
                    continue;
                };
                let fields: Vec<String> = items
                    .iter()
                    .enumerate()
                    .map_while(|(i, item)| {
                        let s = item.as_str()?;
                        Some(if s == "." {
                            previous.get(i).cloned().unwrap_or_default()
                        } else {
                            s.to_owned()
                        })
                    })
                    .collect();
                if fields.len() < 2 {
                    continue; // a metric math expression
                }
                previous = fields.clone();
                if fields[0] != "Messaging" {
                    continue;
                }
                let name = fields[1].as_str();
                let dimensions: Vec<&str> = fields[2..].iter().map(String::as_str).collect();
                let Some((_, extra)) = CUSTOM_METRICS.iter().find(|(m, _)| *m == name) else {
                    problems.push(format!("dashboard {title:?}: unknown metric {name}"));
                    continue;
                };
                let ok = match dimensions.as_slice() {
                    ["Service", "messaging"] => true,
                    ["Service", "messaging", dim, _] => Some(*dim) == *extra,
                    _ => false,
                };
                if ok {
                    shown.insert(name.to_owned());
                } else {
                    problems.push(format!(
                        "dashboard {title:?}: {name} with dimensions {dimensions:?} is not \
                         emitted (Service=messaging{})",
                        extra
                            .map(|d| format!(", optionally with {d}"))
                            .unwrap_or_default()
                    ));
                }
            }
        }
        for (metric, _) in CUSTOM_METRICS {
            if !shown.contains(*metric) {
                problems.push(format!("dashboard shows no {metric}"));
            }
        }
        problems
    }

    fn all_problems(doc: &Value) -> Vec<String> {
        [
            permission_problems(doc),
            credential_problems(doc),
            event_problems(doc),
            redrive_problems(doc),
            visibility_problems(doc),
            alarm_problems(doc),
            dashboard_problems(doc),
        ]
        .concat()
    }

    fn assert_none(problems: Vec<String>) {
        assert!(
            problems.is_empty(),
            "template.yaml:\n  - {}",
            problems.join("\n  - ")
        );
    }

    // ---- parameters and logs ---------------------------------------------------------

    /// What the security review asked of the template: no TRACE (the runtime would
    /// log raw events, Authorization headers included), provider URLs over https
    /// only, and JSON access logs of the HTTP API that carry no header.
    fn hardening_problems(doc: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        let levels: Vec<&str> = doc["Parameters"]["LogLevel"]["AllowedValues"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if levels.is_empty() || levels.contains(&"TRACE") {
            problems.push(format!(
                "LogLevel must be limited and refuse TRACE: {levels:?}"
            ));
        }
        for name in ["TwilioApiUrl", "SendGridApiUrl"] {
            let parameter = &doc["Parameters"][name];
            let pattern = parameter["AllowedPattern"].as_str().unwrap_or_default();
            let default = parameter["Default"].as_str().unwrap_or_default();
            if !pattern.starts_with("^https://") || !default.starts_with("https://") {
                problems.push(format!("{name} must allow https URLs only: {pattern:?}"));
            }
        }
        let settings = &properties(doc, "HttpApi")["AccessLogSettings"];
        match get_att(&settings["DestinationArn"]) {
            Some((group, _))
                if kind(&doc["Resources"][group.as_str()]) == "AWS::Logs::LogGroup" => {}
            other => problems.push(format!("HttpApi access logs go to no log group: {other:?}")),
        }
        let format = settings["Format"].as_str().unwrap_or_default();
        match serde_json::from_str::<serde_json::Value>(format) {
            Ok(fields) => {
                for key in ["requestId", "routeKey", "status", "latencyMs"] {
                    if fields.get(key).is_none() {
                        problems.push(format!("HttpApi access logs lack {key}"));
                    }
                }
                let lower = format.to_lowercase();
                if lower.contains("header")
                    || lower.contains("authorization")
                    || lower.contains("apikey")
                {
                    problems.push("HttpApi access logs must not carry headers or keys".into());
                }
            }
            Err(e) => problems.push(format!("HttpApi access log format is not JSON: {e}")),
        }
        problems
    }

    // ---- the project's template -------------------------------------------------------

    #[test]
    fn parameters_and_logs_keep_secrets_out() {
        assert_none(hardening_problems(&template()));
        let mut doc = template();
        *at(&mut doc, "Parameters.LogLevel.AllowedValues") = yaml("[TRACE, DEBUG, INFO]");
        *at(&mut doc, "Parameters.TwilioApiUrl.AllowedPattern") = yaml("'^https?://.+$'");
        *at(
            &mut doc,
            "Resources.HttpApi.Properties.AccessLogSettings.Format",
        ) = yaml(
            "'{\"requestId\":\"$context.requestId\",\"auth\":\"$request.header.Authorization\"}'",
        );
        let problems = hardening_problems(&doc);
        assert_eq!(problems.len(), 6, "{problems:#?}");
        assert!(problems[0].starts_with("LogLevel"), "{problems:#?}");
        assert!(problems[1].starts_with("TwilioApiUrl"), "{problems:#?}");
        assert!(problems[2].ends_with("lack routeKey"), "{problems:#?}");
        assert!(problems[5].contains("headers or keys"), "{problems:#?}");
    }

    #[test]
    fn each_function_is_allowed_exactly_what_its_code_needs() {
        assert_none(permission_problems(&template()));
    }

    #[test]
    fn provider_credentials_come_only_from_the_secret_the_delivery_function_may_read() {
        assert_none(credential_problems(&template()));
    }

    #[test]
    fn each_function_is_triggered_exactly_as_the_readme_says() {
        assert_none(event_problems(&template()));
    }

    #[test]
    fn the_queue_redrives_after_the_receive_the_delivery_function_treats_as_last() {
        assert_none(redrive_problems(&template()));
    }

    #[test]
    fn the_queue_visibility_timeout_is_at_least_six_delivery_timeouts() {
        assert_none(visibility_problems(&template()));
    }

    #[test]
    fn every_alarm_notifies_the_alarm_topic_and_says_what_to_do() {
        assert_none(alarm_problems(&template()));
    }

    #[test]
    fn the_dashboard_is_json_showing_every_custom_metric_as_emitted() {
        assert_none(dashboard_problems(&template()));
    }

    // ---- each check can fail ----------------------------------------------------------

    fn at<'a>(doc: &'a mut Value, path: &str) -> &'a mut Value {
        path.split('.')
            .fold(doc, |value, key| match key.parse::<usize>() {
                Ok(index) => &mut value[index],
                Err(_) => &mut value[key],
            })
    }

    fn push(doc: &mut Value, path: &str, item: &str) {
        at(doc, path)
            .as_sequence_mut()
            .unwrap_or_else(|| panic!("{path} is not a list"))
            .push(yaml(item));
    }

    type Edit = fn(&mut Value);

    /// (what is changed, the change, a fragment of the problem it must cause).
    const WIDENINGS: &[(&str, Edit, &str)] = &[
        (
            "every index instead of the two the read paths use",
            |d| {
                *at(
                    d,
                    "Resources.ReadFunction.Properties.Policies.0.Statement.1.Resource",
                ) = yaml("!Sub \"${MessagesTable.Arn}/index/*\"")
            },
            "wildcard resource",
        ),
        (
            "a query on the table itself",
            |d| {
                *at(
                    d,
                    "Resources.ReadFunction.Properties.Policies.0.Statement.1.Resource",
                ) = yaml("!GetAtt MessagesTable.Arn")
            },
            "ReadFunction allows more than expected: dynamodb:Query on MessagesTable",
        ),
        (
            "an extra action",
            |d| {
                *at(
                    d,
                    "Resources.ReadFunction.Properties.Policies.0.Statement.0.Action",
                ) = yaml("[dynamodb:GetItem, dynamodb:Scan]")
            },
            "ReadFunction allows more than expected: dynamodb:Scan on MessagesTable",
        ),
        (
            "an extra resource",
            |d| {
                *at(
                    d,
                    "Resources.ReadFunction.Properties.Policies.0.Statement.0.Resource",
                ) = yaml("[!GetAtt MessagesTable.Arn, !GetAtt DeadLetterQueue.Arn]")
            },
            "ReadFunction allows more than expected: dynamodb:GetItem on DeadLetterQueue",
        ),
        (
            "an extra statement",
            |d| {
                push(
                    d,
                    "Resources.InboundFunction.Properties.Policies.0.Statement",
                    "{Effect: Allow, Action: sqs:DeleteMessage, Resource: !GetAtt MessagesQueue.Arn}",
                )
            },
            "InboundFunction allows more than expected: sqs:DeleteMessage on MessagesQueue",
        ),
        (
            "a missing action",
            |d| {
                *at(
                    d,
                    "Resources.DeliveryFunction.Properties.Policies.0.Statement.1.Action",
                ) = yaml(
                    "[sqs:ChangeMessageVisibility, sqs:ReceiveMessage, sqs:DeleteMessage, sqs:GetQueueAttributes]",
                )
            },
            "DeliveryFunction lacks what its code needs: sqs:SendMessage on MessagesQueue",
        ),
        (
            "a wildcard action",
            |d| {
                *at(
                    d,
                    "Resources.OutboundFunction.Properties.Policies.0.Statement.0.Action",
                ) = yaml("dynamodb:*")
            },
            "OutboundFunction: wildcard action \"dynamodb:*\"",
        ),
        (
            "a wildcard resource",
            |d| {
                *at(
                    d,
                    "Resources.ReadFunction.Properties.Policies.0.Statement.0.Resource",
                ) = yaml("\"*\"")
            },
            "ReadFunction: wildcard resource \"*\"",
        ),
        (
            "a wildcard in a !Sub resource",
            |d| {
                *at(
                    d,
                    "Resources.ReadFunction.Properties.Policies.0.Statement.0.Resource",
                ) = yaml("!Sub \"${MessagesTable.Arn}/index/*\"")
            },
            "ReadFunction: wildcard resource !Sub",
        ),
        (
            "a literal ARN",
            |d| {
                *at(
                    d,
                    "Resources.ReadFunction.Properties.Policies.0.Statement.0.Resource",
                ) = yaml("arn:aws:dynamodb:us-east-1:123456789012:table/messages")
            },
            "ReadFunction: literal resource",
        ),
        (
            "NotAction",
            |d| {
                *at(
                    d,
                    "Resources.ReadFunction.Properties.Policies.0.Statement.0.NotAction",
                ) = yaml("iam:*")
            },
            "ReadFunction: a statement uses NotAction",
        ),
        (
            "a SAM policy template",
            |d| {
                push(
                    d,
                    "Resources.InboundFunction.Properties.Policies",
                    "DynamoDBCrudPolicy: {TableName: !Ref MessagesTable}",
                )
            },
            "InboundFunction: SAM policy template DynamoDBCrudPolicy is used",
        ),
        (
            "a managed policy",
            |d| {
                push(
                    d,
                    "Resources.ReadFunction.Properties.Policies",
                    "AmazonSQSFullAccess",
                )
            },
            "ReadFunction: managed policy",
        ),
        (
            "a Role",
            |d| {
                *at(d, "Resources.ReadFunction.Properties.Role") =
                    yaml("arn:aws:iam::123456789012:role/admin")
            },
            "ReadFunction: Role is set",
        ),
        (
            "an IAM resource",
            |d| {
                *at(d, "Resources.ExtraPolicy") = yaml(
                    "{Type: AWS::IAM::Policy, Properties: {PolicyName: x, Roles: [!Ref ReadFunctionRole]}}",
                )
            },
            "resource ExtraPolicy of type AWS::IAM::Policy",
        ),
        (
            "a function without expectations",
            |d| {
                *at(d, "Resources.AdminFunction") = yaml(
                    "{Type: AWS::Serverless::Function, Properties: {Policies: [AdministratorAccess]}}",
                )
            },
            "add a new function's exact permissions to EXPECTED_GRANTS",
        ),
        (
            "an extra route",
            |d| {
                *at(d, "Resources.ReadFunction.Properties.Events.List") = yaml(
                    "{Type: HttpApi, Properties: {ApiId: !Ref HttpApi, Path: /messages, Method: GET}}",
                )
            },
            "ReadFunction is triggered by",
        ),
        (
            "a route on an implicit API",
            |d| {
                *at(
                    d,
                    "Resources.OutboundFunction.Properties.Events.Post.Properties.ApiId",
                ) = Value::Null
            },
            "OutboundFunction is triggered by",
        ),
        (
            "no partial batch responses",
            |d| {
                *at(
                    d,
                    "Resources.DeliveryQueueTrigger.Properties.FunctionResponseTypes",
                ) = Value::Null
            },
            "DeliveryFunction is triggered by {\"SQS MessagesQueue FunctionResponseTypes=[]\"}",
        ),
        (
            "the outbound function allowed to write API keys",
            |d| {
                *at(
                    d,
                    "Resources.OutboundFunction.Properties.Policies.0.Statement.2.Condition",
                ) = yaml(
                    "{ForAllValues:StringLike: {dynamodb:LeadingKeys: [MSG#*, IDEMPOTENCY#*, APIKEY#*]}}",
                )
            },
            "OutboundFunction: dynamodb:PutItem on MessagesTable on the keys {\"APIKEY#*\", \"IDEMPOTENCY#*\", \"MSG#*\"}",
        ),
        (
            "an item action on any key (as before the review)",
            |d| {
                *at(
                    d,
                    "Resources.OutboundFunction.Properties.Policies.0.Statement.3.Condition",
                ) = Value::Null
            },
            "OutboundFunction: dynamodb:UpdateItem on MessagesTable on any key",
        ),
        (
            "a key condition that one matching key satisfies",
            |d| {
                *at(
                    d,
                    "Resources.DeliveryFunction.Properties.Policies.0.Statement.0.Condition",
                ) = yaml("{ForAnyValue:StringLike: {dynamodb:LeadingKeys: [MSG#*, SUPPRESSION#*]}}")
            },
            "DeliveryFunction: a condition",
        ),
        (
            "a trigger the role cannot poll with (as SAM's managed policy would have allowed)",
            |d| {
                *at(
                    d,
                    "Resources.DeliveryFunction.Properties.Policies.0.Statement.1.Action",
                ) = yaml("[sqs:ChangeMessageVisibility, sqs:SendMessage]")
            },
            "DeliveryFunction lacks what its code needs: sqs:DeleteMessage on MessagesQueue, \
             sqs:GetQueueAttributes on MessagesQueue, sqs:ReceiveMessage on MessagesQueue",
        ),
        (
            "a redrive after a different receive",
            |d| {
                *at(
                    d,
                    "Resources.MessagesQueue.Properties.RedrivePolicy.maxReceiveCount",
                ) = yaml("3")
            },
            "maxReceiveCount is 3 but DeliveryFunction has MAX_RECEIVE_COUNT=5",
        ),
        (
            "no MAX_RECEIVE_COUNT",
            |d| {
                *at(
                    d,
                    "Resources.DeliveryFunction.Properties.Environment.Variables.MAX_RECEIVE_COUNT",
                ) = Value::Null
            },
            "must both be set to the same number",
        ),
        (
            "a short visibility timeout",
            |d| *at(d, "Resources.MessagesQueue.Properties.VisibilityTimeout") = yaml("120"),
            "VisibilityTimeout is 120 s, less than 6 × DeliveryFunction Timeout (30 s)",
        ),
        (
            "a longer delivery timeout",
            |d| *at(d, "Resources.DeliveryFunction.Properties.Timeout") = yaml("60"),
            "VisibilityTimeout is 180 s, less than 6 × DeliveryFunction Timeout (60 s)",
        ),
        (
            "an alarm that notifies nobody on OK",
            |d| *at(d, "Resources.DeliveryErrors.Properties.OKActions") = Value::Null,
            "alarm DeliveryErrors: OKActions is Null",
        ),
        (
            "an alarm without a useful description",
            |d| *at(d, "Resources.Api5xxRate.Properties.AlarmDescription") = yaml("5xx"),
            "alarm Api5xxRate: AlarmDescription \"5xx\"",
        ),
        (
            "any secret whose name starts like the provider secret's",
            |d| {
                *at(
                    d,
                    "Resources.DeliveryFunction.Properties.Policies.0.Statement.2.Resource",
                ) = yaml(
                    "!Sub \"arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${ProviderSecretName}-*\"",
                )
            },
            "DeliveryFunction: wildcard resource !Sub",
        ),
        (
            "every secret",
            |d| {
                *at(
                    d,
                    "Resources.DeliveryFunction.Properties.Policies.0.Statement.2.Resource",
                ) = yaml(
                    "!Sub \"arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:?*\"",
                )
            },
            "DeliveryFunction: wildcard resource !Sub",
        ),
        (
            "a secret's ARN with a ? wildcard",
            |d| {
                *at(
                    d,
                    "Resources.DeliveryFunction.Properties.Policies.0.Statement.2.Resource",
                ) = yaml("arn:aws:secretsmanager:us-east-1:123456789012:secret:other-??????")
            },
            "DeliveryFunction: wildcard resource",
        ),
        (
            "an extra action on the secret",
            |d| {
                *at(
                    d,
                    "Resources.DeliveryFunction.Properties.Policies.0.Statement.2.Action",
                ) = yaml("[secretsmanager:GetSecretValue, secretsmanager:PutSecretValue]")
            },
            "DeliveryFunction allows more than expected: secretsmanager:PutSecretValue on \
             ProviderSecret",
        ),
        (
            "the secret readable by another function",
            |d| {
                push(
                    d,
                    "Resources.ReadFunction.Properties.Policies.0.Statement",
                    "{Effect: Allow, Action: secretsmanager:GetSecretValue, Resource: !Sub \"arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${ProviderSecretName}-??????\"}",
                )
            },
            "ReadFunction allows more than expected: secretsmanager:GetSecretValue on \
             ProviderSecret",
        ),
        (
            "no grant on the secret",
            |d| {
                at(
                    d,
                    "Resources.DeliveryFunction.Properties.Policies.0.Statement",
                )
                .as_sequence_mut()
                .expect("statements")
                .remove(2);
            },
            "DeliveryFunction lacks what its code needs: secretsmanager:GetSecretValue on \
             ProviderSecret",
        ),
        (
            "a secret name that may hold wildcards",
            |d| *at(d, "Parameters.ProviderSecretName.AllowedPattern") = Value::Null,
            "parameter ProviderSecretName: AllowedPattern is Null",
        ),
        (
            "the function reading another secret than its policy allows",
            |d| {
                *at(
                    d,
                    "Resources.DeliveryFunction.Properties.Environment.Variables.PROVIDER_SECRET_ID",
                ) = yaml("other/secret")
            },
            "DeliveryFunction: PROVIDER_SECRET_ID is",
        ),
        (
            "no credential source",
            |d| {
                *at(
                    d,
                    "Resources.DeliveryFunction.Properties.Environment.Variables.PROVIDER_SECRET_ID",
                ) = Value::Null
            },
            "DeliveryFunction sets neither PROVIDER_SECRET_ID nor PROVIDER_PARAMETER_PATH",
        ),
        (
            "a credential in an environment variable",
            |d| {
                *at(
                    d,
                    "Resources.DeliveryFunction.Properties.Environment.Variables.TWILIO_AUTH_TOKEN",
                ) = yaml("!Ref TwilioAuthToken")
            },
            "DeliveryFunction: environment variable TWILIO_AUTH_TOKEN is set",
        ),
        (
            "the cursor key resolved into the environment (as before the review)",
            |d| {
                *at(
                    d,
                    "Resources.ReadFunction.Properties.Environment.Variables.CURSOR_SECRET_ID",
                ) = Value::Null;
                *at(
                    d,
                    "Resources.ReadFunction.Properties.Environment.Variables.CURSOR_SECRET",
                ) = yaml("!Sub \"{{resolve:secretsmanager:${CursorSecret}:SecretString}}\"")
            },
            "ReadFunction: environment variable CURSOR_SECRET is set",
        ),
        (
            "a secret resolved into any variable",
            |d| {
                *at(
                    d,
                    "Resources.SuppressionsFunction.Properties.Environment.Variables.KEY",
                ) = yaml("!Sub \"{{resolve:secretsmanager:${CursorSecret}:SecretString}}\"")
            },
            "SuppressionsFunction: an environment variable resolves a secret",
        ),
        (
            "the Inbound Parse password in the environment (as before the review)",
            |d| {
                *at(
                    d,
                    "Resources.WebhooksFunction.Properties.Environment.Variables.SENDGRID_INBOUND_BASIC_AUTH",
                ) = yaml("!Ref SendGridInboundBasicAuth")
            },
            "WebhooksFunction: environment variable SENDGRID_INBOUND_BASIC_AUTH is set",
        ),
        (
            "the webhooks reading the provider secret (as before the review)",
            |d| {
                *at(
                    d,
                    "Resources.WebhooksFunction.Properties.Policies.0.Statement.2.Resource",
                ) = yaml(
                    "!Sub \"arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${ProviderSecretName}-??????\"",
                )
            },
            "WebhooksFunction allows more than expected: secretsmanager:GetSecretValue on \
             ProviderSecret",
        ),
        (
            "a credential in a global environment variable",
            |d| *at(d, "Globals.Function.Environment.Variables.SENDGRID_API_KEY") = yaml("SG.x"),
            "Globals.Function: environment variable SENDGRID_API_KEY is set",
        ),
        (
            "a dashboard metric under dimensions nobody emits",
            |d| {
                let body = at(d, "Resources.Dashboard.Properties.DashboardBody");
                let Value::Tagged(sub) = body else {
                    panic!("DashboardBody is not !Sub")
                };
                let text = sub.value.as_str().unwrap().replace(
                    "\"BatchSize\", \"Service\", \"messaging\"",
                    "\"BatchSize\", \"Service\", \"messaging\", \"Channel\", \"sms\"",
                );
                sub.value = Value::String(text);
            },
            "BatchSize with dimensions [\"Service\", \"messaging\", \"Channel\", \"sms\"] is not emitted",
        ),
    ];

    #[test]
    fn every_widening_or_mismatch_is_reported_readably() {
        let original = template();
        let mut failures = Vec::new();
        for (change, edit, expected) in WIDENINGS {
            let mut doc = original.clone();
            edit(&mut doc);
            let problems = all_problems(&doc);
            if !problems.iter().any(|p| p.contains(expected)) {
                failures.push(format!(
                    "{change}: expected a problem containing {expected:?}, got {problems:#?}"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// Spellings that allow exactly the same thing are accepted.
    const EQUIVALENTS: &[(&str, Edit)] = &[
        ("an action as a single string", |d| {
            *at(
                d,
                "Resources.ReadFunction.Properties.Policies.0.Statement.0.Action",
            ) = yaml("dynamodb:GetItem")
        }),
        ("a statement as a single mapping, in a second policy", |d| {
            // The queue statement moves out of the first policy into a second one.
            at(
                d,
                "Resources.InboundFunction.Properties.Policies.0.Statement",
            )
            .as_sequence_mut()
            .expect("statements")
            .remove(1);
            push(
                d,
                "Resources.InboundFunction.Properties.Policies",
                "{Statement: {Effect: Allow, Action: sqs:SendMessage, Resource: !GetAtt MessagesQueue.Arn}}",
            );
        }),
        ("a resource as a list, in the long GetAtt form", |d| {
            *at(
                d,
                "Resources.ReadFunction.Properties.Policies.0.Statement.0.Resource",
            ) = yaml("[{Fn::GetAtt: [MessagesTable, Arn]}]")
        }),
        ("the secret's ARN in the long Sub form", |d| {
            *at(
                d,
                "Resources.DeliveryFunction.Properties.Policies.0.Statement.2.Resource",
            ) = yaml(
                "[{Fn::Sub: \"arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${ProviderSecretName}-??????\"}]",
            )
        }),
        ("the delivery timeout from Globals", |d| {
            *at(d, "Resources.DeliveryFunction.Properties.Timeout") = Value::Null;
            *at(d, "Globals.Function.Timeout") = yaml("30");
        }),
    ];

    #[test]
    fn equivalent_spellings_are_accepted() {
        let original = template();
        for (change, edit) in EQUIVALENTS {
            let mut doc = original.clone();
            edit(&mut doc);
            let problems = all_problems(&doc);
            assert!(problems.is_empty(), "{change}: {problems:#?}");
        }
    }
}
