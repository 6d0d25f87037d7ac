//! Protobuf to Kubernetes JSON, one message at a time, driven by the schema table.
//!
//! Zero values: Go's protobuf marshaller writes every non-pointer field, so values appear on the wire that Go's JSON
//! leaves out (`omitempty`). The Go struct tags are not available, so the rule is:
//! * an empty string or `[]byte` is dropped, unless the field is required in the OpenAPI schema (no `omitempty`);
//! * numbers and booleans are kept, zero or not: they may be Go pointers (`replicas: 0`, EndpointSlice
//!   `ready: false`), and for value fields an extra `0`/`false` means the same as an absent one;
//! * messages are kept, empty or not (`{}`): Go writes a message field only for a value struct or a non-nil
//!   pointer, and its JSON writes `{}` for both, except for the special types below;
//! * a zero `metav1.Time`/`MicroTime` (written by Go as an empty message) and an empty `RawExtension` are dropped
//!   (Go's JSON writes `null`), and so are empty lists and maps (never on the wire).

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use super::schema::{self, Field, Label, Message, Special, Ty};
use super::wire::{self, Slots, Wire};

/// Messages nested deeper than this, counting across embedded objects, are refused (`JSONSchemaProps` is
/// recursive; the stack is not).
const MAX_DEPTH: usize = 100;

/// Embedded `k8s\0` objects (a `RawExtension` holding a protobuf object) nested deeper than this are refused.
pub(super) const MAX_ENVELOPES: usize = 8;

/// Why an object could not be decoded, and where (a JSON path such as `spec.ports[0].port`).
#[derive(Debug)]
pub(super) struct DecodeError {
    path: String,
    message: String,
}

impl DecodeError {
    fn at(mut self, segment: &str) -> Self {
        if !segment.is_empty() {
            let sep = if self.path.is_empty() || self.path.starts_with('[') { "" } else { "." };
            self.path = format!("{segment}{sep}{}", self.path);
        }
        self
    }
}

impl From<String> for DecodeError {
    fn from(message: String) -> Self {
        DecodeError { path: String::new(), message }
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

type Result<T> = std::result::Result<T, DecodeError>;

/// Protobuf-to-JSON walk of one object.
pub(super) struct Walker {
    /// How many `k8s\0` envelopes enclose the object being walked.
    pub envelopes: usize,
}

impl Walker {
    /// JSON of one message; `None` where Go's JSON writes `null` (zero `Time`, empty `RawExtension`).
    pub(super) fn message(&self, m: &'static Message, buf: &[u8], depth: usize) -> Result<Option<Value>> {
        if depth > MAX_DEPTH {
            return Err(format!("objects nested more than {MAX_DEPTH} deep").into());
        }
        let slots = Slots::read(m, buf)?;
        if m.special != Special::None {
            return self.special(&slots, depth);
        }
        let mut out = Map::new();
        for (field, values) in m.fields.iter().zip(&slots.values) {
            if values.is_empty() {
                continue;
            }
            let value =
                self.field(field, values, depth).map_err(|e| e.at(if field.inline { "" } else { field.json }))?;
            match value {
                None => {}
                Some(Value::Object(inner)) if field.inline => out.extend(inner),
                Some(_) if field.inline => return Err(format!("embedded {} is not an object", field.json).into()),
                Some(v) => {
                    out.insert(field.json.to_string(), v);
                }
            }
        }
        Ok(Some(Value::Object(out)))
    }

    /// JSON of one present field (`values` is not empty); `None` when it is left out.
    fn field(&self, field: &Field, values: &[Wire<'_>], depth: usize) -> Result<Option<Value>> {
        match (field.label, field.ty) {
            (Label::Optional, Ty::Message(i)) => match wire::merged(values) {
                Some(buf) => self.message(schema::message(i), &buf, depth + 1),
                None => Ok(None),
            },
            (Label::Optional, ty) => {
                let Some(last) = values.last() else { return Ok(None) };
                match scalar(ty, *last)? {
                    Value::String(s) if s.is_empty() && !field.required => Ok(None),
                    v => Ok(Some(v)),
                }
            }
            (Label::Repeated, ty) => {
                let mut items = Vec::with_capacity(values.len());
                for value in values {
                    match (ty, *value) {
                        (Ty::Message(i), Wire::Bytes(b)) => {
                            let item = self.message(schema::message(i), b, depth + 1);
                            items.push(item.map_err(|e| e.at(&format!("[{}]", items.len())))?.unwrap_or(Value::Null));
                        }
                        (Ty::Double, Wire::Bytes(packed)) => {
                            let (chunks, rest) = packed.as_chunks::<8>();
                            if !rest.is_empty() {
                                return Err("packed doubles: length is not a multiple of 8".to_string().into());
                            }
                            for chunk in chunks {
                                items.push(scalar(ty, Wire::Fixed64(u64::from_le_bytes(*chunk)))?);
                            }
                        }
                        (Ty::Bool | Ty::Int32 | Ty::Int64, Wire::Bytes(mut packed)) => {
                            while !packed.is_empty() {
                                let (n, rest) = wire::varint(packed)?;
                                items.push(scalar(ty, Wire::Varint(n))?);
                                packed = rest;
                            }
                        }
                        (ty, value) => items.push(scalar(ty, value)?),
                    }
                }
                Ok(Some(Value::Array(items)))
            }
            (Label::Map(value_ty), _) => {
                let mut entries = Vec::with_capacity(values.len());
                for value in values {
                    let Wire::Bytes(entry) = value else { return Err("map entry is not a message".to_string().into()) };
                    let (mut key, mut val) = (&[][..], None);
                    for item in wire::Reader::new(entry) {
                        match item? {
                            (1, Wire::Bytes(k)) => key = k,
                            (2, v) => val = Some(v),
                            (1, _) => return Err("map key is not a string".to_string().into()),
                            _ => {}
                        }
                    }
                    let key = std::str::from_utf8(key).map_err(|_| "map key: invalid UTF-8".to_string())?;
                    let json = match (value_ty, val) {
                        (Ty::Message(i), v) => {
                            let buf = match v {
                                Some(Wire::Bytes(b)) => b,
                                None => &[],
                                Some(_) => return Err(format!("{key}: map value is not a message").into()),
                            };
                            let value = self.message(schema::message(i), buf, depth + 1);
                            value.map_err(|e| e.at(&format!("[{key:?}]")))?.unwrap_or(Value::Null)
                        }
                        (ty, Some(v)) => scalar(ty, v).map_err(|e| e.at(&format!("[{key:?}]")))?,
                        (ty, None) => zero(ty),
                    };
                    entries.push((key.to_string(), json));
                }
                // Go's JSON writes map keys sorted; a repeated key keeps its last value (stable sort)
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Ok(Some(Value::Object(entries.into_iter().collect())))
            }
        }
    }

    /// The JSON of the field with this JSON name, if present.
    fn named(&self, slots: &Slots<'_>, json: &str, depth: usize) -> Result<Option<Value>> {
        match slots.message.position(json) {
            Some(i) if !slots.values[i].is_empty() => self.field(&slots.message.fields[i], &slots.values[i], depth),
            _ => Ok(None),
        }
    }

    /// JSON of the special types (see [`Special`]).
    fn special(&self, s: &Slots<'_>, depth: usize) -> Result<Option<Value>> {
        let int = |json: &str| s.varint(json).unwrap_or(0);
        let non_empty = |v: Option<Value>| match v {
            Some(Value::Array(a)) if !a.is_empty() => Some(Value::Array(a)),
            _ => None,
        };
        Ok(match s.message.special {
            Special::None => return Err("not a special type".to_string().into()),
            Special::Time | Special::MicroTime if s.is_empty() => None,
            Special::Time | Special::MicroTime => {
                let micro = s.message.special == Special::MicroTime;
                Some(Value::String(rfc3339(int("seconds") as i64, i64::from(int("nanos") as i32), micro)?))
            }
            Special::Duration => Some(Value::String(go_duration(int("duration") as i64))),
            Special::RawJson => match s.bytes("raw") {
                None | Some([]) => None,
                Some(raw) => Some(self.raw_json(raw, depth)?),
            },
            Special::Items => Some(self.named(s, "items", depth)?.unwrap_or(Value::Array(Vec::new()))),
            Special::IntOrString => match int("type") {
                0 => Some(Value::from(int("intVal") as i32)),
                1 => Some(Value::String(s.string("strVal")?.to_string())),
                t => return Err(format!("IntOrString has impossible type {t}").into()),
            },
            Special::Quantity => Some(Value::String(match s.string("string")? {
                "" => "0".to_string(),
                q => q.to_string(),
            })),
            Special::SchemaOrArray => match non_empty(self.named(s, "jsonSchemas", depth)?) {
                Some(items) => Some(items),
                None => self.named(s, "schema", depth)?,
            },
            Special::SchemaOrBool => match self.named(s, "schema", depth)? {
                Some(schema) => Some(schema),
                None => Some(Value::Bool(int("allows") != 0)),
            },
            Special::SchemaOrStringArray => match non_empty(self.named(s, "property", depth)?) {
                Some(items) => Some(items),
                None => self.named(s, "schema", depth)?,
            },
        })
    }

    /// `RawExtension`/`FieldsV1`/`JSON` bytes: JSON text, or a nested `k8s\0` protobuf object.
    fn raw_json(&self, raw: &[u8], depth: usize) -> Result<Value> {
        if raw.starts_with(super::MAGIC) {
            if self.envelopes >= MAX_ENVELOPES {
                return Err("embedded protobuf objects nested too deeply".to_string().into());
            }
            return super::decode_envelope(raw, self.envelopes + 1, depth + 1).map_err(|e| e.to_string().into());
        }
        serde_json::from_slice(raw).map_err(|e| format!("embedded JSON: {e}").into())
    }
}

/// JSON of a scalar value.
fn scalar(ty: Ty, value: Wire<'_>) -> Result<Value> {
    Ok(match (ty, value) {
        (Ty::Bool, Wire::Varint(n)) => Value::Bool(n != 0),
        // as Go decodes them: int32 keeps the low 32 bits
        (Ty::Int32, Wire::Varint(n)) => Value::from(n as i32),
        (Ty::Int64, Wire::Varint(n)) => Value::from(n as i64),
        (Ty::Double, Wire::Fixed64(bits)) => {
            let n = f64::from_bits(bits);
            Value::Number(Number::from_f64(n).ok_or_else(|| format!("{n} is not representable in JSON"))?)
        }
        (Ty::String, Wire::Bytes(b)) => {
            Value::String(std::str::from_utf8(b).map_err(|_| "invalid UTF-8 in string".to_string())?.to_string())
        }
        (Ty::Bytes, Wire::Bytes(b)) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        (ty, _) => return Err(format!("wrong wire type for {ty:?}").into()),
    })
}

/// JSON of an absent map value.
fn zero(ty: Ty) -> Value {
    match ty {
        Ty::Bool => Value::Bool(false),
        Ty::Int32 | Ty::Int64 => Value::from(0),
        Ty::Double => Value::from(0.0),
        Ty::String | Ty::Bytes => Value::String(String::new()),
        Ty::Message(_) => Value::Object(Map::new()),
    }
}

/// `metav1.Time` (`2006-01-02T15:04:05Z`) or `metav1.MicroTime` (`2006-01-02T15:04:05.000000Z`), always UTC.
pub(super) fn rfc3339(seconds: i64, nanos: i64, micro: bool) -> std::result::Result<String, String> {
    if !(0..1_000_000_000).contains(&nanos) {
        return Err(format!("timestamp nanos {nanos} out of range"));
    }
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    // civil-from-days (Howard Hinnant), proleptic Gregorian
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return Err(format!("timestamp year {year} out of range"));
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let frac = if micro { format!(".{:06}", nanos / 1_000) } else { String::new() };
    Ok(format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}{frac}Z"))
}

/// Go's `time.Duration.String()` (`1h2m3.5s`, `1.5ms`, `0s`), the JSON form of `metav1.Duration`.
pub(super) fn go_duration(nanos: i64) -> String {
    fn frac(v: u64, prec: u32) -> (u64, String) {
        let p = 10u64.pow(prec);
        let f = v % p;
        let digits = if f == 0 {
            String::new()
        } else {
            format!(".{:0width$}", f, width = prec as usize).trim_end_matches('0').to_string()
        };
        (v / p, digits)
    }
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    let body = if u < 1_000_000_000 {
        let (prec, unit) = if u < 1_000 {
            (0, "ns")
        } else if u < 1_000_000 {
            (3, "µs")
        } else {
            (6, "ms")
        };
        let (int, f) = frac(u, prec);
        format!("{int}{f}{unit}")
    } else {
        let (secs, f) = frac(u, 9);
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        match (h, m) {
            (0, 0) => format!("{s}{f}s"),
            (0, _) => format!("{m}m{s}{f}s"),
            _ => format!("{h}h{m}m{s}{f}s"),
        }
    };
    format!("{sign}{body}")
}
