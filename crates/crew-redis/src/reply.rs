//! Reading Redis replies by hand: stream entries and script results come
//! back as nested arrays, read here into plain Rust values.

use redis::Value;

/// A stream entry: its id and its field/value pairs.
pub(crate) type Entry = (String, Vec<(Vec<u8>, Vec<u8>)>);

pub(crate) fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.as_bytes().to_vec()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes().to_vec()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        Value::Okay => Some(b"OK".to_vec()),
        _ => None,
    }
}

pub(crate) fn string(v: &Value) -> Option<String> {
    bytes(v).and_then(|b| String::from_utf8(b).ok())
}

pub(crate) fn array(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        _ => &[],
    }
}

/// Field/value pairs of one entry (an array of alternating items).
pub(crate) fn fields(v: &Value) -> Vec<(Vec<u8>, Vec<u8>)> {
    array(v)
        .chunks(2)
        .filter_map(|p| match p {
            [k, v] => Some((bytes(k)?, bytes(v)?)),
            _ => None,
        })
        .collect()
}

/// One entry `[id, [field, value, …]]`.
pub(crate) fn entry(v: &Value) -> Option<Entry> {
    match array(v) {
        [id, f] => Some((string(id)?, fields(f))),
        _ => None,
    }
}

/// The entries of an `XREAD`/`XREADGROUP` reply (one stream or many,
/// RESP2 arrays or RESP3 maps), in order.
pub(crate) fn read_reply(v: &Value) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut per_stream = |entries: &Value| {
        out.extend(array(entries).iter().filter_map(entry));
    };
    match v {
        Value::Map(m) => {
            for (_, entries) in m {
                per_stream(entries);
            }
        }
        _ => {
            for s in array(v) {
                if let [_, entries] = array(s) {
                    per_stream(entries);
                }
            }
        }
    }
    out
}

/// The entries of an `XREADGROUP` reply over several streams, each with
/// its stream's key.
pub(crate) fn read_reply_by_stream(v: &Value) -> Vec<(String, Entry)> {
    let mut out = Vec::new();
    let mut per_stream = |key: &Value, entries: &Value| {
        if let Some(key) = string(key) {
            out.extend(
                array(entries)
                    .iter()
                    .filter_map(entry)
                    .map(|e| (key.clone(), e)),
            );
        }
    };
    match v {
        Value::Map(m) => {
            for (key, entries) in m {
                per_stream(key, entries);
            }
        }
        _ => {
            for s in array(v) {
                if let [key, entries] = array(s) {
                    per_stream(key, entries);
                }
            }
        }
    }
    out
}

/// The value of `field` among an entry's fields.
pub(crate) fn field<'a>(fields: &'a [(Vec<u8>, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(k, _)| k == name.as_bytes())
        .map(|(_, v)| v.as_slice())
}
