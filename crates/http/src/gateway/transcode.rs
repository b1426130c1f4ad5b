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

/// serde_json's message names the field for unknown fields, but quotes the
/// offending value for type errors; only the first kind is kept whole.
fn json_problem(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let what = if text.starts_with("unknown field") {
        text.split(", expected")
            .next()
            .unwrap_or("unknown field")
            .to_owned()
    } else {
        match err.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "the body is not JSON".to_owned()
            }
            _ => text.split(':').next().unwrap_or("invalid value").to_owned(),
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
