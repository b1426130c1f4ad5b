//! JSON ⇄ protobuf the grpc-gateway way (protojson): lowerCamelCase field
//! names (the proto names are accepted too), enums by name, Timestamps in
//! RFC 3339, 64-bit integers as strings. Path variables and query
//! parameters fill the fields they name. No message here quotes a value the
//! caller sent, since a value may be a secret.

use prost_reflect::prost::Message;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions,
    Value,
};
use velocity_domain::Error;

use super::rules::Binding;

/// The request message of `binding`, encoded.
pub fn request(
    binding: &Binding,
    path: &[(String, String)],
    query: Option<&str>,
    body: &[u8],
) -> Result<Vec<u8>, Error> {
    let input = binding.input();
    let mut message = if binding.body {
        from_json(&input, body)?
    } else {
        DynamicMessage::new(input.clone())
    };
    if !binding.body {
        apply_query(binding, &mut message, query.unwrap_or_default())?;
    } else if query.is_some_and(|q| !q.is_empty()) {
        return Err(Error::invalid(
            "this route takes its fields from the JSON body, not the query string",
        ));
    }
    for field in &binding.path_fields {
        let value = path
            .iter()
            .find(|(name, _)| name == field.name())
            .map(|(_, value)| value.as_str())
            .ok_or_else(|| Error::invalid(format!("path variable {} is missing", field.name())))?;
        let parsed = scalar(field, value)?;
        message.set_field(field, parsed);
    }
    Ok(message.encode_to_vec())
}

/// The JSON of a response message: every scalar and list field present
/// (so `keys` is `[]`, not absent), unset messages (an unset Timestamp)
/// left out.
pub fn response(output: &MessageDescriptor, bytes: &[u8]) -> Result<Vec<u8>, Error> {
    let message = DynamicMessage::decode(output.clone(), bytes).map_err(|e| {
        Error::Internal(format!(
            "response of {} does not decode: {e}",
            output.full_name()
        ))
    })?;
    let options = SerializeOptions::new().skip_default_fields(false);
    let mut out = Vec::with_capacity(bytes.len() * 2 + 2);
    let mut serializer = serde_json::Serializer::new(&mut out);
    message
        .serialize_with_options(&mut serializer, &options)
        .map_err(|e| {
            Error::Internal(format!(
                "response of {} does not serialize: {e}",
                output.full_name()
            ))
        })?;
    Ok(out)
}

fn from_json(input: &MessageDescriptor, body: &[u8]) -> Result<DynamicMessage, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DynamicMessage::new(input.clone()));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    // Unknown fields are refused (the default): a misspelt field is an
    // error, not a silently different request.
    let message = DynamicMessage::deserialize_with_options(
        input.clone(),
        &mut deserializer,
        &DeserializeOptions::new(),
    )
    .and_then(|m| deserializer.end().map(|()| m))
    .map_err(|e| Error::invalid(json_problem(&e)))?;
    Ok(message)
}

/// An unknown field is named (a plain name of the caller's, not a value);
/// other messages of serde_json and prost-reflect may quote the offending
/// value, so only the kind of problem and where it is are said.
fn json_problem(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let unknown = text
        .strip_prefix("unrecognized field name '")
        .and_then(|rest| rest.split('\'').next());
    let what = if let Some(name) = unknown {
        format!("unknown field {}", printable(name))
    } else {
        match err.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "the body is not JSON".to_owned()
            }
            _ => "a value does not fit its field (type, enum name, format or range)".to_owned(),
        }
    };
    format!(
        "the JSON body does not fit the request (line {}, column {}): {what}",
        err.line(),
        err.column()
    )
}

/// Query parameters by JSON name or proto name; a repeated field takes
/// the parameter as often as it is given (`scopes=a&scopes=b`) or a comma
/// list; anything unknown, or a message-typed field, is refused.
fn apply_query(binding: &Binding, message: &mut DynamicMessage, query: &str) -> Result<(), Error> {
    let fields = binding.query_fields();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let field = fields
            .iter()
            .find(|f| f.json_name() == name || f.name() == name)
            .ok_or_else(|| {
                Error::invalid(format!("unknown query parameter {}", printable(&name)))
            })?;
        if field.is_map() || matches!(field.kind(), Kind::Message(_)) {
            return Err(Error::invalid(format!(
                "{} cannot be given in the query string",
                field.json_name()
            )));
        }
        if field.is_list() {
            let items: Vec<Value> = value
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|item| scalar(field, item))
                .collect::<Result<_, _>>()?;
            if let Value::List(list) = message.get_field_mut(field) {
                list.extend(items);
            }
        } else {
            if message.has_field(field) {
                return Err(Error::invalid(format!(
                    "query parameter {} was given more than once",
                    field.json_name()
                )));
            }
            let parsed = scalar(field, &value)?;
            message.set_field(field, parsed);
        }
    }
    Ok(())
}

/// A parameter name is echoed only when it is short and plain.
fn printable(name: &str) -> String {
    if name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        name.to_owned()
    } else {
        "(unprintable)".to_owned()
    }
}

/// One path or query value, as the field's type reads it.
fn scalar(field: &FieldDescriptor, text: &str) -> Result<Value, Error> {
    let bad = || {
        Error::invalid(format!(
            "{} is not a valid {}",
            field.json_name(),
            kind_name(&field.kind())
        ))
    };
    Ok(match field.kind() {
        Kind::String => Value::String(text.to_owned()),
        Kind::Bool => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(bad()),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(text.parse().map_err(|_| bad())?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(text.parse().map_err(|_| bad())?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(text.parse().map_err(|_| bad())?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(text.parse().map_err(|_| bad())?),
        Kind::Float => Value::F32(text.parse().map_err(|_| bad())?),
        Kind::Double => Value::F64(text.parse().map_err(|_| bad())?),
        Kind::Enum(e) => match e.get_value_by_name(text) {
            Some(v) => Value::EnumNumber(v.number()),
            None => Value::EnumNumber(
                text.parse::<i32>()
                    .ok()
                    .filter(|n| e.get_value(*n).is_some())
                    .ok_or_else(bad)?,
            ),
        },
        Kind::Bytes | Kind::Message(_) => return Err(bad()),
    })
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::String => "string",
        Kind::Bool => "boolean (true or false)",
        Kind::Enum(_) => "enum value name",
        Kind::Float | Kind::Double => "number",
        Kind::Bytes => "byte string",
        Kind::Message(_) => "message",
        _ => "integer",
    }
}

#[cfg(test)]
mod tests {
    use prost_reflect::DescriptorPool;

    use super::*;
    use crate::gateway::rules::bindings;

    fn binding(rpc: &str) -> Binding {
        let pool = DescriptorPool::decode(velocity_proto::FILE_DESCRIPTOR_SET).unwrap();
        bindings(&pool)
            .unwrap()
            .into_iter()
            .find(|b| b.rpc.name() == rpc)
            .unwrap()
    }

    fn decoded(binding: &Binding, bytes: &[u8]) -> serde_json::Value {
        let message = DynamicMessage::decode(binding.input(), bytes).unwrap();
        serde_json::to_value(&message).unwrap()
    }

    #[test]
    fn query_parameters_by_json_or_proto_name() {
        let list = binding("ListKeys");
        let bytes = request(
            &list,
            &[],
            Some("workspaceSlug=acme&page_size=5&includeRevoked=true"),
            b"",
        )
        .unwrap();
        assert_eq!(
            decoded(&list, &bytes),
            serde_json::json!({"workspaceSlug": "acme", "pageSize": 5, "includeRevoked": true})
        );
        for bad in [
            "colour=red",
            "pageSize=many",
            "pageSize=1&pageSize=2",
            "includeRevoked=yes",
        ] {
            let err = request(&list, &[], Some(bad), b"").unwrap_err();
            assert_eq!(
                err.reason(),
                velocity_domain::Reason::InvalidArgument,
                "{bad}"
            );
        }
    }

    #[test]
    fn path_variables_override_the_body() {
        let rotate = binding("RotateAppSecret");
        let body = br#"{"clientId": "other", "overlapSeconds": 60}"#;
        let path = [("client_id".to_owned(), "app_1".to_owned())];
        let bytes = request(&rotate, &path, None, body).unwrap();
        assert_eq!(
            decoded(&rotate, &bytes),
            serde_json::json!({"clientId": "app_1", "overlapSeconds": 60})
        );
        assert!(request(&rotate, &path, Some("x=1"), body).is_err());
    }

    #[test]
    fn bodies_are_protojson_and_refusals_quote_no_value() {
        let create = binding("CreateKey");
        let bytes = request(
            &create,
            &[],
            None,
            br#"{"kind": "KEY_KIND_WORKSPACE", "workspace_slug": "acme", "expiresAt": "2030-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(
            decoded(&create, &bytes),
            serde_json::json!({"kind": "KEY_KIND_WORKSPACE", "workspaceSlug": "acme", "expiresAt": "2030-01-01T00:00:00Z"})
        );
        assert!(
            request(&create, &[], None, b"  ").is_ok(),
            "an empty body is an empty message"
        );
        for body in [
            &br#"{"kind": "vel_SecretLookingValue"}"#[..],
            br#"{"name": ["vel_SecretLookingValue"]}"#,
            br#"{"expiresAt": "vel_SecretLookingValue"}"#,
            br#"vel_SecretLookingValue"#,
        ] {
            let err = request(&create, &[], None, body).unwrap_err();
            assert_eq!(err.reason(), velocity_domain::Reason::InvalidArgument);
            assert!(
                !err.public_message().contains("SecretLooking"),
                "{}",
                err.public_message()
            );
        }
        let err = request(&create, &[], None, br#"{"nmae": "x"}"#).unwrap_err();
        assert!(
            err.public_message().contains("nmae"),
            "{}",
            err.public_message()
        );
    }

    #[test]
    fn responses_keep_scalars_and_lists_and_drop_unset_messages() {
        let list = binding("ListKeys");
        let json = response(&list.output(), &[]).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&json).unwrap(),
            serde_json::json!({"keys": [], "nextPageToken": ""})
        );
        let revoke = binding("RevokeKey");
        // RevokeKeyResponse { revoked_at: { seconds: 1_700_000_000 } }.
        let bytes = [0x0a, 0x06, 0x08, 0x80, 0xe2, 0xcf, 0xaa, 0x06];
        let json = response(&revoke.output(), &bytes).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&json).unwrap(),
            serde_json::json!({"revokedAt": "2023-11-14T22:13:20Z"})
        );
    }
}
