//! The OpenAPI 3.1 document of every HTTP route, built at start-up from the
//! two sources the router is built from: the hand-written table
//! (`routes::table`) and the gateway's bindings, whose parameters and
//! schemas come from the same descriptors the requests are transcoded
//! with (protojson: lowerCamelCase names, enums by name, Timestamps as
//! RFC 3339 strings, 64-bit integers as strings).

use std::collections::BTreeMap;

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use crate::gateway::{Binding, Gateway};
use crate::routes::Route;

const TIMESTAMP: &str = "google.protobuf.Timestamp";
const FAILURE_REASON: &str = "velocity.auth.v1.FailureReason";

/// Statuses every gateway operation may answer with the error body.
const GATEWAY_ERRORS: [&str; 6] = ["400", "401", "403", "404", "409", "503"];

pub fn document(routes: &[Route], gateway: &Gateway, session_cookie: &str) -> Value {
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for route in routes {
        paths.entry(route.path.to_owned()).or_default().insert(
            route.method.as_str().to_ascii_lowercase(),
            route.operation.clone(),
        );
    }
    let mut schemas = Schemas::default();
    for binding in gateway.bindings() {
        let operation = operation(binding, &mut schemas);
        paths
            .entry(binding.path.clone())
            .or_default()
            .insert(binding.method.as_str().to_ascii_lowercase(), operation);
    }
    let reasons: Vec<Value> = gateway
        .pool()
        .get_enum_by_name(FAILURE_REASON)
        .map(|e| {
            e.values()
                .filter(|v| v.number() != 0)
                .map(|v| Value::from(v.name()))
                .collect()
        })
        .unwrap_or_default();
    let mut components = schemas.0;
    components.insert(
        "Error".to_owned(),
        json!({
            "type": "object",
            "description": "Every JSON refusal: the error table's `error`, a public description, and the machine-readable FailureReason.",
            "required": ["error", "error_description", "reason"],
            "properties": {
                "error": {"type": "string"},
                "error_description": {"type": "string"},
                "reason": {"type": "string", "enum": reasons},
            },
        }),
    );
    components.insert(
        "OAuthTokens".to_owned(),
        json!({
            "type": "object",
            "required": ["access_token", "token_type", "expires_in", "refresh_token", "scope"],
            "properties": {
                "access_token": {"type": "string"},
                "token_type": {"type": "string", "enum": ["Bearer"]},
                "expires_in": {"type": "integer"},
                "refresh_token": {"type": "string"},
                "scope": {"type": "string"},
                "workspace_id": {"type": "string"},
            },
        }),
    );
    let mut responses = Map::new();
    responses.insert("Error".to_owned(), error_response("a refusal"));
    for status in ["400", "401", "403", "404", "409", "429", "503"] {
        responses.insert(format!("Error{status}"), error_response(describe(status)));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Velocity Auth",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The HTTP routes of Velocity Auth: the OAuth URLs, forward-auth, probes, and the HTTP/JSON face of the gRPC API under /v1 (docs/http-api.md).",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": responses,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                    "description": "A session token, or a personal key (`velu_`) holding `admin`; for Authenticate none is needed."},
                "sessionCookie": {"type": "apiKey", "in": "cookie", "name": session_cookie,
                    "description": "The web app's @supabase/ssr session cookie (chunks .0, .1, … too). State-changing requests need an allowed Origin."},
                "clientBasic": {"type": "http", "scheme": "basic",
                    "description": "client_id and client_secret (RFC 6749 §2.3.1)"},
            },
        },
    })
}

fn describe(status: &str) -> &'static str {
    match status {
        "400" => "invalid request",
        "401" => "no valid credential",
        "403" => "not allowed",
        "404" => "not found",
        "409" => "already exists",
        "429" => "too many attempts; see Retry-After",
        "503" => "unavailable; retry",
        _ => "a refusal",
    }
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    })
}

fn operation(binding: &Binding, schemas: &mut Schemas) -> Value {
    let rpc = &binding.rpc;
    let comment = comment_of(rpc.parent_file().file_descriptor_proto(), rpc.path());
    let mut parameters = Vec::new();
    for field in &binding.path_fields {
        parameters.push(json!({
            "name": field.name(), "in": "path", "required": true,
            "schema": schemas.field(field),
        }));
    }
    for field in binding.query_fields() {
        let mut parameter = json!({
            "name": field.json_name(), "in": "query", "required": false,
            "schema": schemas.field(&field),
        });
        if let Some(text) = comment_of(field.parent_file().file_descriptor_proto(), field.path()) {
            parameter["description"] = Value::from(text);
        }
        parameters.push(parameter);
    }
    let mut responses = Map::new();
    responses.insert(
        "200".to_owned(),
        json!({
            "description": format!("{}, in protojson", binding.output().name()),
            "content": {"application/json": {"schema": schemas.message_ref(&binding.output())}},
        }),
    );
    for status in GATEWAY_ERRORS {
        responses.insert(
            status.to_owned(),
            json!({"$ref": format!("#/components/responses/Error{status}")}),
        );
    }
    responses.insert(
        "default".to_owned(),
        json!({"$ref": "#/components/responses/Error"}),
    );
    let mut op = json!({
        "operationId": binding.operation_id(),
        "tags": [rpc.parent_service().name()],
        "summary": format!("{} ({})", rpc.name(), rpc.full_name()),
        "security": [{"bearer": []}, {"sessionCookie": []}],
        "parameters": parameters,
        "responses": responses,
    });
    if let Some(text) = comment {
        op["description"] = Value::from(text);
    }
    if binding.body {
        op["requestBody"] = json!({
            "required": false,
            "content": {"application/json": {"schema": schemas.message_ref(&binding.input())}},
        });
    }
    op
}

/// Components by message full name, filled as operations refer to them.
#[derive(Default)]
struct Schemas(Map<String, Value>);

impl Schemas {
    fn message_ref(&mut self, message: &MessageDescriptor) -> Value {
        let name = message.full_name().to_owned();
        if !self.0.contains_key(&name) {
            // Placed first, so a message that refers to itself terminates.
            self.0.insert(name.clone(), Value::Null);
            let schema = self.message(message);
            self.0.insert(name.clone(), schema);
        }
        json!({"$ref": format!("#/components/schemas/{name}")})
    }

    fn message(&mut self, message: &MessageDescriptor) -> Value {
        let mut properties = Map::new();
        for field in message.fields() {
            let mut schema = self.field(&field);
            if let Some(text) =
                comment_of(field.parent_file().file_descriptor_proto(), field.path())
                && let Some(object) = schema.as_object_mut()
                && !object.contains_key("$ref")
            {
                object.insert("description".to_owned(), Value::from(text));
            }
            properties.insert(field.json_name().to_owned(), schema);
        }
        let mut schema = json!({
            "type": "object",
            "properties": properties,
            "additionalProperties": false,
        });
        if let Some(text) = comment_of(message.parent_file_descriptor_proto(), message.path()) {
            schema["description"] = Value::from(text);
        }
        schema
    }

    fn field(&mut self, field: &FieldDescriptor) -> Value {
        if field.is_map() {
            let value = match field.kind() {
                Kind::Message(entry) => entry.map_entry_value_field().kind(),
                other => other,
            };
            return json!({"type": "object", "additionalProperties": self.kind(&value)});
        }
        let item = self.kind(&field.kind());
        if field.is_list() {
            json!({"type": "array", "items": item})
        } else {
            item
        }
    }

    fn kind(&mut self, kind: &Kind) -> Value {
        match kind {
            Kind::String => json!({"type": "string"}),
            Kind::Bool => json!({"type": "boolean"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX})
            }
            // protojson writes 64-bit integers as strings, and reads both.
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
                json!({"type": ["string", "integer"], "format": "int64"})
            }
            Kind::Float | Kind::Double => json!({"type": "number"}),
            Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
            Kind::Enum(e) => {
                let names: Vec<Value> = e.values().map(|v| Value::from(v.name())).collect();
                json!({"type": "string", "enum": names})
            }
            Kind::Message(m) if m.full_name() == TIMESTAMP => {
                json!({"type": "string", "format": "date-time"})
            }
            Kind::Message(m) => self.message_ref(m),
        }
    }
}

/// The leading comment of the element at `path` of `file`, on one line.
fn comment_of(
    file: &prost_reflect::prost_types::FileDescriptorProto,
    path: &[i32],
) -> Option<String> {
    let location = file
        .source_code_info
        .as_ref()?
        .location
        .iter()
        .find(|l| l.path == path)?;
    let text = location
        .leading_comments
        .as_deref()?
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    (!text.is_empty()).then_some(text)
}
