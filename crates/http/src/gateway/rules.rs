//! The route table of the gateway, read from the `google.api.http` option
//! of each RPC in the descriptor set: no second, hand-kept list. Only what
//! the gateway serves faithfully is accepted — one binding per RPC, `GET`,
//! `POST`, `PUT`, `PATCH` or `DELETE`, a path under `/v1/` whose variables
//! are whole segments naming top-level scalar fields, and a body of `*` or
//! none — and anything else stops start-up, so an annotation is never
//! silently ignored.

use axum::http::Method;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    Value,
};

use super::SetupError;

/// Every gateway path starts here, apart from the OAuth URLs.
pub const PREFIX: &str = "/v1/";

const HTTP_RULE_EXTENSION: &str = "google.api.http";

/// One RPC served over HTTP.
#[derive(Clone, Debug)]
pub struct Binding {
    pub method: Method,
    /// The template as annotated; `{field}` is also axum's capture syntax.
    pub path: String,
    /// Fields named by path variables, in order.
    pub path_fields: Vec<FieldDescriptor>,
    /// `body: "*"`: the request message is the JSON body (less path
    /// fields). Otherwise every other field is a query parameter.
    pub body: bool,
    pub rpc: MethodDescriptor,
}

impl Binding {
    /// `/velocity.auth.v1.AuthService/CreateKey`, as gRPC addresses it.
    pub fn grpc_path(&self) -> String {
        format!(
            "/{}/{}",
            self.rpc.parent_service().full_name(),
            self.rpc.name()
        )
    }

    pub fn input(&self) -> MessageDescriptor {
        self.rpc.input()
    }

    pub fn output(&self) -> MessageDescriptor {
        self.rpc.output()
    }

    /// The fields a GET or DELETE takes from the query string.
    pub fn query_fields(&self) -> Vec<FieldDescriptor> {
        if self.body {
            return Vec::new();
        }
        self.input()
            .fields()
            .filter(|f| !self.path_fields.contains(f))
            .collect()
    }

    /// `AuthService_CreateKey`, grpc-gateway's operation id.
    pub fn operation_id(&self) -> String {
        format!("{}_{}", self.rpc.parent_service().name(), self.rpc.name())
    }
}

/// Every annotated RPC of every service in `pool`, in declaration order.
pub fn bindings(pool: &DescriptorPool) -> Result<Vec<Binding>, SetupError> {
    let Some(extension) = pool.get_extension_by_name(HTTP_RULE_EXTENSION) else {
        return Err(SetupError::Descriptors(format!(
            "{HTTP_RULE_EXTENSION} is not in the descriptor set"
        )));
    };
    let mut out: Vec<Binding> = Vec::new();
    for service in pool.services() {
        for rpc in service.methods() {
            let options = rpc.options();
            if !options.has_extension(&extension) {
                continue;
            }
            let rule = match options.get_extension(&extension).as_ref() {
                Value::Message(rule) => rule.clone(),
                _ => return Err(rule_error(&rpc, "the option is not an HttpRule")),
            };
            let binding = binding(&rpc, &rule)?;
            if let Some(other) = out
                .iter()
                .find(|b| b.method == binding.method && b.path == binding.path)
            {
                return Err(rule_error(
                    &rpc,
                    &format!("{} {} is bound already", other.method, other.path),
                ));
            }
            out.push(binding);
        }
    }
    Ok(out)
}

fn binding(rpc: &MethodDescriptor, rule: &DynamicMessage) -> Result<Binding, SetupError> {
    if rpc.is_client_streaming() || rpc.is_server_streaming() {
        return Err(rule_error(rpc, "streaming RPCs are not served over HTTP"));
    }
    let text = |name: &str| -> String {
        rule.get_field_by_name(name)
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    for unsupported in ["response_body", "selector"] {
        if !text(unsupported).is_empty() {
            return Err(rule_error(
                rpc,
                &format!("`{unsupported}` is not supported"),
            ));
        }
    }
    if rule
        .get_field_by_name("additional_bindings")
        .and_then(|v| v.as_list().map(|l| !l.is_empty()))
        .unwrap_or(false)
    {
        return Err(rule_error(rpc, "`additional_bindings` is not supported"));
    }
    if rule.has_field_by_name("custom") {
        return Err(rule_error(rpc, "custom verbs are not supported"));
    }
    let mut found = None;
    for (name, method) in [
        ("get", Method::GET),
        ("put", Method::PUT),
        ("post", Method::POST),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ] {
        if rule.has_field_by_name(name) {
            found = Some((method, text(name)));
        }
    }
    let Some((method, path)) = found else {
        return Err(rule_error(rpc, "no HTTP method and path"));
    };
    let body = match text("body").as_str() {
        "" => false,
        "*" => true,
        other => {
            return Err(rule_error(
                rpc,
                &format!("body \"{other}\": only \"*\" or none is supported"),
            ));
        }
    };
    if body && (method == Method::GET || method == Method::DELETE) {
        return Err(rule_error(rpc, "GET and DELETE take no body"));
    }
    let path_fields = path_fields(rpc, &path)?;
    Ok(Binding {
        method,
        path,
        path_fields,
        body,
        rpc: rpc.clone(),
    })
}

/// The fields of `{variables}` in `path`, checked segment by segment.
fn path_fields(rpc: &MethodDescriptor, path: &str) -> Result<Vec<FieldDescriptor>, SetupError> {
    if !path.starts_with(PREFIX) {
        return Err(rule_error(
            rpc,
            &format!("path {path} is outside {PREFIX}, where the OAuth URLs cannot clash"),
        ));
    }
    let input = rpc.input();
    let mut fields = Vec::new();
    for segment in path[1..].split('/') {
        if segment.is_empty() {
            return Err(rule_error(
                rpc,
                &format!("path {path} has an empty segment"),
            ));
        }
        let Some(inner) = segment.strip_prefix('{') else {
            if segment.contains(['{', '}', ':', '*']) {
                return Err(rule_error(
                    rpc,
                    &format!(
                        "segment {segment}: variables must be whole segments; no verbs or wildcards"
                    ),
                ));
            }
            continue;
        };
        let Some(name) = inner.strip_suffix('}') else {
            return Err(rule_error(
                rpc,
                &format!("segment {segment} is not {{field}}"),
            ));
        };
        let field = input.get_field_by_name(name).ok_or_else(|| {
            rule_error(
                rpc,
                &format!("{{{name}}} is not a field of {}", input.full_name()),
            )
        })?;
        if field.is_list() || field.is_map() || matches!(field.kind(), Kind::Message(_)) {
            return Err(rule_error(
                rpc,
                &format!("{{{name}}} is not a scalar field"),
            ));
        }
        if fields.contains(&field) {
            return Err(rule_error(rpc, &format!("{{{name}}} appears twice")));
        }
        fields.push(field);
    }
    Ok(fields)
}

fn rule_error(rpc: &MethodDescriptor, problem: &str) -> SetupError {
    SetupError::Rule {
        rpc: rpc.full_name().to_owned(),
        problem: problem.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> DescriptorPool {
        DescriptorPool::decode(velocity_proto::FILE_DESCRIPTOR_SET).unwrap()
    }

    #[test]
    fn the_table_is_the_annotations_of_keys_apps_grants_and_authenticate() {
        let table: Vec<(String, String, String)> = bindings(&pool())
            .unwrap()
            .iter()
            .map(|b| (b.method.to_string(), b.path.clone(), b.grpc_path()))
            .collect();
        let expected = [
            ("POST", "/v1/authenticate", "AuthService/Authenticate"),
            ("POST", "/v1/keys", "AuthService/CreateKey"),
            ("DELETE", "/v1/keys/{key_id}", "AuthService/RevokeKey"),
            ("GET", "/v1/keys", "AuthService/ListKeys"),
            ("GET", "/v1/grants", "AuthService/ListGrants"),
            ("DELETE", "/v1/grants/{grant_id}", "AuthService/RevokeGrant"),
            ("POST", "/v1/apps", "OAuthAppService/RegisterApp"),
            ("GET", "/v1/apps", "OAuthAppService/ListApps"),
            ("PATCH", "/v1/apps/{client_id}", "OAuthAppService/UpdateApp"),
            (
                "POST",
                "/v1/apps/{client_id}/secret",
                "OAuthAppService/RotateAppSecret",
            ),
            (
                "DELETE",
                "/v1/apps/{client_id}",
                "OAuthAppService/DeleteApp",
            ),
        ];
        let mut expected: Vec<(String, String, String)> = expected
            .iter()
            .map(|(m, p, r)| {
                (
                    m.to_string(),
                    p.to_string(),
                    format!("/velocity.auth.v1.{r}"),
                )
            })
            .collect();
        let mut table = table;
        table.sort();
        expected.sort();
        assert_eq!(table, expected);
    }

    #[test]
    fn bindings_know_their_path_query_and_body_fields() {
        let all = bindings(&pool()).unwrap();
        let find = |name: &str| all.iter().find(|b| b.rpc.name() == name).unwrap();
        let list = find("ListKeys");
        assert!(!list.body);
        let query: Vec<String> = list
            .query_fields()
            .iter()
            .map(|f| f.json_name().to_owned())
            .collect();
        assert_eq!(
            query,
            ["workspaceSlug", "includeRevoked", "pageSize", "pageToken"]
        );
        let rotate = find("RotateAppSecret");
        assert!(rotate.body);
        assert!(rotate.query_fields().is_empty());
        assert_eq!(
            rotate
                .path_fields
                .iter()
                .map(|f| f.name())
                .collect::<Vec<_>>(),
            ["client_id"]
        );
        assert_eq!(rotate.operation_id(), "OAuthAppService_RotateAppSecret");
        assert!(
            all.iter()
                .all(|b| b.rpc.parent_service().name() != "DirectoryService")
        );
    }

    #[test]
    fn templates_are_checked() {
        let pool = pool();
        let rpc = pool
            .get_service_by_name("velocity.auth.v1.AuthService")
            .unwrap()
            .methods()
            .find(|m| m.name() == "RevokeKey")
            .unwrap();
        assert!(path_fields(&rpc, "/v1/keys/{key_id}").is_ok());
        for bad in [
            "/keys/{key_id}",
            "/v1/keys/{nope}",
            "/v1/keys/x{key_id}",
            "/v1/keys/{key_id}:revoke",
            "/v1/keys/{key_id=*}",
            "/v1/keys/{key_id}/{key_id}",
            "/v1//keys",
            "/v1/**",
        ] {
            assert!(path_fields(&rpc, bad).is_err(), "{bad}");
        }
    }

    /// `binding` of RevokeKey under a rule with these fields.
    fn rule(fields: &[(&str, Value)]) -> Result<Binding, SetupError> {
        let pool = pool();
        let rpc = pool
            .get_service_by_name("velocity.auth.v1.AuthService")
            .unwrap()
            .methods()
            .find(|m| m.name() == "RevokeKey")
            .unwrap();
        let mut rule =
            DynamicMessage::new(pool.get_message_by_name("google.api.HttpRule").unwrap());
        for (name, value) in fields {
            rule.set_field_by_name(name, value.clone());
        }
        binding(&rpc, &rule)
    }

    #[test]
    fn only_what_is_served_faithfully_is_accepted() {
        let text = |s: &str| Value::String(s.to_owned());
        let path = text("/v1/keys/{key_id}");
        assert!(rule(&[("delete", path.clone())]).is_ok());
        assert!(rule(&[("post", path.clone()), ("body", text("*"))]).is_ok());
        let custom = {
            let pool = pool();
            let mut custom = DynamicMessage::new(
                pool.get_message_by_name("google.api.CustomHttpPattern")
                    .unwrap(),
            );
            custom.set_field_by_name("kind", text("HEAD"));
            custom.set_field_by_name("path", path.clone());
            Value::Message(custom)
        };
        let another = {
            let pool = pool();
            let mut another =
                DynamicMessage::new(pool.get_message_by_name("google.api.HttpRule").unwrap());
            another.set_field_by_name("get", path.clone());
            Value::List(vec![Value::Message(another)])
        };
        for (why, fields) in [
            ("no method", vec![("body", text("*"))]),
            (
                "a body field",
                vec![("post", path.clone()), ("body", text("key_id"))],
            ),
            (
                "a GET body",
                vec![("get", path.clone()), ("body", text("*"))],
            ),
            (
                "response_body",
                vec![
                    ("delete", path.clone()),
                    ("response_body", text("revoked_at")),
                ],
            ),
            ("custom", vec![("custom", custom)]),
            (
                "additional_bindings",
                vec![("delete", path.clone()), ("additional_bindings", another)],
            ),
        ] {
            let err = rule(&fields).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("google.api.http on velocity.auth.v1.AuthService.RevokeKey"),
                "{why}: {err}"
            );
        }
    }
}
