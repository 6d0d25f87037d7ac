//! The protobuf wire format: reading a message's fields into per-field slots, without trusting the input.

use std::borrow::Cow;

use super::schema::{Label, Message, Ty};

/// One field value as it is on the wire.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

/// Reads a base-128 varint at the start of `buf`, returning it and the rest.
pub(super) fn varint(buf: &[u8]) -> Result<(u64, &[u8]), String> {
    let mut value = 0u64;
    for (i, byte) in buf.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        if i == 9 && bits > 1 {
            return Err("varint overflows 64 bits".into());
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, &buf[i + 1..]));
        }
    }
    Err(if buf.len() < 10 { "truncated varint".into() } else { "varint longer than 10 bytes".into() })
}

fn take<const N: usize>(buf: &[u8]) -> Result<([u8; N], &[u8]), String> {
    match buf.split_first_chunk::<N>() {
        Some((head, rest)) => Ok((*head, rest)),
        None => Err(format!("truncated {}-bit value", N * 8)),
    }
}

/// The fields of an encoded message, in wire order: `(tag, value)`.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn read(&mut self) -> Result<(u32, Wire<'a>), String> {
        let (key, rest) = varint(self.buf)?;
        let tag = u32::try_from(key >> 3).ok().filter(|t| (1..1 << 29).contains(t)).ok_or("invalid field tag")?;
        let (value, rest) = match key & 7 {
            0 => varint(rest).map(|(v, r)| (Wire::Varint(v), r))?,
            1 => take::<8>(rest).map(|(v, r)| (Wire::Fixed64(u64::from_le_bytes(v)), r))?,
            2 => {
                let (len, rest) = varint(rest)?;
                match usize::try_from(len).ok().filter(|l| *l <= rest.len()) {
                    Some(len) => (Wire::Bytes(&rest[..len]), &rest[len..]),
                    None => return Err(format!("field {tag}: length {len} past the end of the message")),
                }
            }
            5 => take::<4>(rest).map(|(v, r)| (Wire::Fixed32(u32::from_le_bytes(v)), r))?,
            w => return Err(format!("field {tag}: unsupported wire type {w}")),
        };
        self.buf = rest;
        Ok((tag, value))
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<(u32, Wire<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let item = self.read();
        if item.is_err() {
            self.buf = &[];
        }
        Some(item)
    }
}

/// A message's field values, by position in [`Message::fields`], in wire order. Fields the schema does not know are
/// skipped (as Go skips them), after checking they are well-formed.
pub(super) struct Slots<'a> {
    pub message: &'static Message,
    pub values: Vec<Vec<Wire<'a>>>,
}

impl<'a> Slots<'a> {
    pub(super) fn read(message: &'static Message, buf: &'a [u8]) -> Result<Self, String> {
        let mut values = vec![Vec::new(); message.fields.len()];
        for item in Reader::new(buf) {
            let (tag, value) = item?;
            if let Some((i, field)) = message.field(tag) {
                let ok = match (field.label, field.ty, value) {
                    (_, Ty::String | Ty::Bytes | Ty::Message(_), Wire::Bytes(_))
                    | (Label::Map(_), _, Wire::Bytes(_)) => true,
                    (Label::Map(_), _, _) => false,
                    (_, Ty::Bool | Ty::Int32 | Ty::Int64, Wire::Varint(_)) | (_, Ty::Double, Wire::Fixed64(_)) => true,
                    // packed
                    (Label::Repeated, Ty::Bool | Ty::Int32 | Ty::Int64 | Ty::Double, Wire::Bytes(_)) => true,
                    _ => false,
                };
                if !ok {
                    return Err(format!("wrong wire type for {}.{} ({:?})", message.name, field.json, field.ty));
                }
                values[i].push(value);
            }
        }
        Ok(Slots { message, values })
    }

    /// Values of the field with this JSON name (none if absent or not in the schema).
    pub(super) fn get(&self, json: &str) -> &[Wire<'a>] {
        self.message.position(json).and_then(|i| self.values.get(i)).map_or(&[], Vec::as_slice)
    }

    /// Whether no known field is present.
    pub(super) fn is_empty(&self) -> bool {
        self.values.iter().all(Vec::is_empty)
    }

    /// The last value of a varint field (protobuf: the last one wins).
    pub(super) fn varint(&self, json: &str) -> Option<u64> {
        self.get(json).iter().rev().find_map(|v| match v {
            Wire::Varint(n) => Some(*n),
            _ => None,
        })
    }

    /// The last value of a string or bytes field.
    pub(super) fn bytes(&self, json: &str) -> Option<&'a [u8]> {
        self.get(json).iter().rev().find_map(|v| match v {
            Wire::Bytes(b) => Some(*b),
            _ => None,
        })
    }

    /// The last value of a string field, `""` if absent.
    pub(super) fn string(&self, json: &str) -> Result<&'a str, String> {
        std::str::from_utf8(self.bytes(json).unwrap_or_default()).map_err(|_| format!("{json}: invalid UTF-8"))
    }
}

/// A singular message field sent more than once is the merge of its occurrences, which protobuf defines as the
/// message decoded from their concatenation.
pub(super) fn merged<'a>(values: &[Wire<'a>]) -> Option<Cow<'a, [u8]>> {
    let mut parts = values.iter().filter_map(|v| match v {
        Wire::Bytes(b) => Some(*b),
        _ => None,
    });
    let first = parts.next()?;
    match parts.next() {
        None => Some(Cow::Borrowed(first)),
        Some(second) => {
            let mut all = [first, second].concat();
            parts.for_each(|p| all.extend_from_slice(p));
            Some(Cow::Owned(all))
        }
    }
}
