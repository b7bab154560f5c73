//! Celery's protocol 2 on a kombu Redis transport: the message envelope,
//! the queue lists of each priority, the result payloads, and the Lua
//! scripts that pop, acknowledge and restore messages the way kombu does.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

use crate::registry::JsonError;

/// kombu's separator between a queue's name and its priority step.
pub(crate) const SEP: &str = "\x06\x16";
/// kombu's priority steps on Redis; 0 is the highest priority.
pub(crate) const STEPS: [u8; 4] = [0, 3, 6, 9];
/// kombu's hash of delivered, unacknowledged messages.
pub(crate) const UNACKED: &str = "unacked";
/// kombu's index of `UNACKED` by delivery time.
pub(crate) const UNACKED_INDEX: &str = "unacked_index";
/// Celery's result key prefix on the Redis backend.
pub(crate) const META: &str = "celery-task-meta-";
/// How long a result stays (Celery's `result_expires` default: one day).
pub(crate) const RESULT_EXPIRES_S: u64 = 86_400;

/// The list holding priority `priority` (0–9) of `queue`, as kombu names it.
pub(crate) fn queue_key(queue: &str, priority: u8) -> String {
    let step = STEPS
        .iter()
        .rev()
        .find(|&&s| s <= priority.min(9))
        .copied()
        .unwrap_or(0);
    if step == 0 {
        queue.to_owned()
    } else {
        format!("{queue}{SEP}{step}")
    }
}

/// The hash of the lists a node's wake-up moves messages into (its
/// "taking" list, field) and the queue list each came from (value).
pub(crate) const TAKING: &str = "_crew.celery.taking";

/// The key that says the node owning taking list `list` is alive (set with
/// the visibility timeout as its expiry, renewed while it runs).
pub(crate) fn alive_key(list: &str) -> String {
    format!("{list}.alive")
}

/// Records the messages in the node's taking list `KEYS[1]` (moved there by
/// its blocking wake-up, already running) in kombu's unacked hash and
/// index, emptying the list; then pops up to ARGV[2] messages from the
/// lists in `KEYS[2..]`, highest priority first, and records each in the
/// same step. ARGV[1]: now (Unix seconds, float). Returns the popped raw
/// messages (not those of the taking list).
///
/// The delivery tag, exchange and routing key are read with string
/// patterns in the envelope's `properties` (the last `"properties":`: it is
/// the envelope's last field, the body is base64, and a key inside a
/// string is escaped, so only the envelope's own keys match), which costs a
/// fraction of decoding the message; a message they do not fit is decoded.
pub(crate) const FETCH: &str = r#"
local out = {}
local want = tonumber(ARGV[2])
local function field(m, at, key)
  return string.match(m, '"' .. key .. '":%s*"([^"\\]*)"', at)
end
local function properties(m)
  local at, from = nil, 1
  while true do
    local i = string.find(m, '"properties":', from, true)
    if not i then return at end
    at, from = i, i + 1
  end
end
local function book(m)
  local tag, ex, rk
  local at = properties(m)
  if at then
    tag, ex, rk = field(m, at, 'delivery_tag'), field(m, at, 'exchange'), field(m, at, 'routing_key')
  end
  if tag and ex and rk then
    ex, rk = '"' .. ex .. '"', '"' .. rk .. '"'
  else
    tag = nil
    local ok, d = pcall(cjson.decode, m)
    if ok and type(d) == 'table' and type(d.properties) == 'table'
        and d.properties.delivery_tag then
      local di = d.properties.delivery_info or {}
      tag = tostring(d.properties.delivery_tag)
      ex, rk = cjson.encode(di.exchange or ''), cjson.encode(di.routing_key or '')
    end
  end
  if tag then
    redis.call('HSET', 'unacked', tag, '[' .. m .. ',' .. ex .. ',' .. rk .. ']')
    redis.call('ZADD', 'unacked_index', ARGV[1], tag)
  end
end
while true do
  local m = redis.call('RPOP', KEYS[1])
  if not m then break end
  book(m)
end
for i = 2, #KEYS do
  while #out < want do
    local m = redis.call('RPOP', KEYS[i])
    if not m then break end
    book(m)
    table.insert(out, m)
  end
  if #out >= want then break end
end
return out
"#;

/// Puts the messages in `unacked` older than ARGV[1] (Unix seconds) back
/// on their queues as kombu's `restore_visible` does (marked redelivered,
/// on the end consumers read next), skipping tags in ARGV[3..]; and the
/// messages in the taking lists of nodes no longer alive (see [`TAKING`];
/// ARGV[2] is this node's list, never touched here) back on the end of the
/// queue lists they came from. Returns how many it restored.
pub(crate) const RESTORE: &str = r#"
local sep = '\6\22'
local skip = {}
for i = 3, #ARGV do skip[ARGV[i]] = true end
local n = 0
local taking = redis.call('HGETALL', '_crew.celery.taking')
for i = 1, #taking, 2 do
  local list, source = taking[i], taking[i + 1]
  if list ~= ARGV[2] and redis.call('EXISTS', list .. '.alive') == 0 then
    while true do
      local m = redis.call('RPOP', list)
      if not m then break end
      redis.call('RPUSH', source, m)
      n = n + 1
    end
    redis.call('HDEL', '_crew.celery.taking', list)
  end
end
local tags = redis.call('ZRANGE', 'unacked_index', '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, 100)
for _, tag in ipairs(tags) do
  if not skip[tag] then
    local raw = redis.call('HGET', 'unacked', tag)
    redis.call('ZREM', 'unacked_index', tag)
    redis.call('HDEL', 'unacked', tag)
    if raw then
      local ok, e = pcall(cjson.decode, raw)
      if ok and type(e) == 'table' and type(e[1]) == 'table' then
        local m, ex, rk = e[1], e[2], e[3]
        if type(m.headers) == 'table' then m.headers.redelivered = true end
        if type(m.properties) == 'table' and type(m.properties.delivery_info) == 'table' then
          m.properties.delivery_info.redelivered = true
        end
        local queues = {}
        if ex and ex ~= '' then
          for _, b in ipairs(redis.call('SMEMBERS', '_kombu.binding.' .. ex)) do
            local a = string.find(b, sep, 1, true)
            local z = a and string.find(b, sep, a + 2, true)
            if a and z and string.sub(b, 1, a - 1) == rk then
              table.insert(queues, string.sub(b, z + 2))
            end
          end
        end
        if #queues == 0 then queues = { rk } end
        local pri = 0
        if type(m.properties) == 'table' then pri = tonumber(m.properties.priority) or 0 end
        if pri < 0 then pri = 0 end
        if pri > 9 then pri = 9 end
        local step = 0
        for _, s in ipairs({ 3, 6, 9 }) do if pri >= s then step = s end end
        local body = cjson.encode(m)
        for _, q in ipairs(queues) do
          local key = q
          if step > 0 then key = q .. sep .. step end
          redis.call('RPUSH', key, body)
        end
        n = n + 1
      end
    end
  end
end
return n
"#;

/// Celery's group key prefix on the Redis backend.
pub(crate) const TASKSET: &str = "celery-taskset-meta-";

/// Records a chord header member's result as Celery's Redis backend does
/// (`on_chord_part_return`, ordered chords): KEYS = `.j .t .s .d` (group
/// key) `.c`; ARGV = task id, encoded `[1, id, state, result]`, score,
/// expiry (s), claim expiry (s), claim token. Returns 1 when this call
/// completed the header and claimed the right to fire the body, 0 when not,
/// -1 when the chord was already done.
pub(crate) const CHORD_PART: &str = r#"
local jkey, tkey, skey, dkey, gkey, ckey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local tid, value, score = ARGV[1], ARGV[2], ARGV[3]
local expires, claim_expires, token = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
if redis.call('GET', ckey) == 'done' then return -1 end
local member = tid .. ':' .. score
if redis.call('SISMEMBER', dkey, member) == 0 then
  redis.call('ZADD', jkey, score, value)
  redis.call('SADD', dkey, member)
end
local ready = redis.call('ZCOUNT', jkey, '-inf', '+inf')
for _, key in ipairs({ jkey, tkey, skey, dkey }) do redis.call('EXPIRE', key, expires) end
redis.call('EXPIRE', gkey, expires)
local diff = redis.call('GET', tkey)
local size = redis.call('GET', skey)
if size and ready == tonumber(size) + tonumber(diff or 0) then
  if redis.call('SET', ckey, token, 'NX', 'EX', claim_expires) then return 1 end
end
return 0
"#;

/// After the body of a chord was sent: drops the header's results if this
/// claim still holds, and marks the chord done. KEYS = `.c .j .t .s .d`;
/// ARGV = claim token, done expiry (s).
pub(crate) const CHORD_CLEANUP: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
  redis.call('SET', KEYS[1], 'done', 'EX', tonumber(ARGV[2]))
  return 1
end
return 0
"#;

/// A Celery task message, read.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub(crate) tag: String,
    pub(crate) id: String,
    pub(crate) task: String,
    pub(crate) args: Vec<Value>,
    pub(crate) kwargs: Map<String, Value>,
    pub(crate) embed: Map<String, Value>,
    pub(crate) headers: Map<String, Value>,
    /// `timelimit`: (hard, soft) in seconds.
    pub(crate) hard: Option<f64>,
    pub(crate) soft: Option<f64>,
    /// Unix seconds.
    pub(crate) eta: Option<f64>,
    pub(crate) expires: Option<f64>,
    /// Why the body was not read (a serializer crew refuses, such as
    /// pickle): the task fails with this instead of running.
    pub(crate) refused: Option<JsonError>,
    /// The raw message, when the node's wake-up moved it into its taking
    /// list: acknowledging it also takes it out of there (see [`FETCH`]).
    pub(crate) woke: Option<Vec<u8>>,
}

/// Reads a message body of `content_type` into JSON: `Ok(Err(why))` for a
/// serializer crew refuses to read, `Err` for a body that does not decode.
fn read_body(content_type: &str, body: &[u8]) -> Result<Result<Value, JsonError>, String> {
    let refuse = |message: String| {
        Ok(Err(JsonError {
            exc_type: "ContentDisallowed".into(),
            exc_module: "kombu.exceptions".into(),
            message,
        }))
    };
    match content_type {
        "application/json" => serde_json::from_slice(body)
            .map(Ok)
            .map_err(|e| format!("the body is not JSON: {e}")),
        "application/x-msgpack" => rmp_serde::from_slice(body)
            .map(Ok)
            .map_err(|e| format!("the body is not msgpack JSON can hold: {e}")),
        "application/x-python-serialize" => refuse(
            "crew does not unpickle task messages (unpickling runs code the message \
             names): send this task with serializer=\"json\" or \"msgpack\""
                .into(),
        ),
        other => refuse(format!(
            "crew reads task messages in JSON (application/json) or msgpack \
             (application/x-msgpack), not `{other}`: send this task with \
             serializer=\"json\" or \"msgpack\""
        )),
    }
}

/// The most a compressed body may grow to: a larger one is refused rather
/// than filling the node's memory.
const MAX_DECOMPRESSED: u64 = 256 << 20;

/// Decompresses a body kombu compressed (its `compression` header); `Err`
/// for a compression crew cannot read, or a body that does not decompress:
/// that fails the task (kombu's `DecodeError`), not the node.
fn decompress(compression: &str, body: Vec<u8>) -> Result<Vec<u8>, JsonError> {
    use std::io::Read as _;
    let fail = |message: String| JsonError {
        exc_type: "DecodeError".into(),
        exc_module: "kombu.exceptions".into(),
        message,
    };
    match compression {
        // kombu's `zlib` and `gzip` are both zlib's format under this
        // name; a real gzip stream is read too.
        "application/x-gzip" | "zlib" | "gzip" => {
            let mut out = Vec::new();
            let read = if body.starts_with(&[0x1f, 0x8b]) {
                flate2::read::GzDecoder::new(&body[..])
                    .take(MAX_DECOMPRESSED + 1)
                    .read_to_end(&mut out)
            } else {
                flate2::read::ZlibDecoder::new(&body[..])
                    .take(MAX_DECOMPRESSED + 1)
                    .read_to_end(&mut out)
            };
            match read {
                Ok(n) if n as u64 > MAX_DECOMPRESSED => Err(fail(format!(
                    "the body decompresses to more than {} MiB, the most a crew node \
                     reads: pass large data by reference (a key or path the task reads)",
                    MAX_DECOMPRESSED >> 20
                ))),
                Ok(_) => Ok(out),
                Err(e) => Err(fail(format!(
                    "the body does not decompress as {compression}: {e}"
                ))),
            }
        }
        other => Err(fail(format!(
            "crew reads task messages compressed with zlib (application/x-gzip) \
             or not at all, not `{other}`: send this task with compression=\"zlib\" \
             or none"
        ))),
    }
}

fn number(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64).filter(|x| *x > 0.0)
}

/// Unix seconds of an ISO-8601 time; UTC when it has no offset.
pub(crate) fn parse_time(s: &str) -> Option<f64> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Some(t.as_nanosecond() as f64 / 1e9);
    }
    let dt = s.parse::<jiff::civil::DateTime>().ok()?;
    let t = dt.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    Some(t.as_nanosecond() as f64 / 1e9)
}

/// Now, as Celery writes `date_done`.
pub(crate) fn now_iso() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        .to_string()
}

/// Now in Unix seconds.
pub(crate) fn now() -> f64 {
    jiff::Timestamp::now().as_nanosecond() as f64 / 1e9
}

impl Message {
    /// Reads a raw message as kombu stores it on a Redis list.
    pub(crate) fn parse(raw: &[u8]) -> Result<Message, String> {
        let env: Value =
            serde_json::from_slice(raw).map_err(|e| format!("the message is not JSON: {e}"))?;
        let props = env
            .get("properties")
            .and_then(Value::as_object)
            .ok_or("the message has no properties")?;
        let tag = match props.get("delivery_tag") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => return Err("the message has no delivery tag".into()),
        };
        let headers = env
            .get("headers")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let ctype = env
            .get("content-type")
            .and_then(Value::as_str)
            .unwrap_or("");
        let body = env.get("body").and_then(Value::as_str).unwrap_or("");
        let body = match props.get("body_encoding").and_then(Value::as_str) {
            Some("base64") => BASE64
                .decode(body)
                .map_err(|e| format!("the body is not base64: {e}"))?,
            _ => body.as_bytes().to_vec(),
        };
        let compression = headers
            .get("compression")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty());
        let body = match compression {
            Some(c) => decompress(c, body),
            None => Ok(body),
        };
        let (body, refused) = match body.map(|b| read_body(ctype, &b)) {
            Ok(read) => match read? {
                Ok(v) => (v, None),
                Err(e) => (json!([[], {}, {}]), Some(e)),
            },
            Err(e) => (json!([[], {}, {}]), Some(e)),
        };
        let (args, kwargs, embed) = match body {
            Value::Array(mut parts) if parts.len() == 3 => {
                let embed = parts.pop().unwrap_or_default();
                let kwargs = parts.pop().unwrap_or_default();
                let args = parts.pop().unwrap_or_default();
                (
                    match args {
                        Value::Array(a) => a,
                        _ => return Err("the body's args are not a list".into()),
                    },
                    match kwargs {
                        Value::Object(k) => k,
                        _ => return Err("the body's kwargs are not a dict".into()),
                    },
                    match embed {
                        Value::Object(e) => e,
                        _ => Map::new(),
                    },
                )
            }
            _ => return Err("the body is not protocol 2's [args, kwargs, embed]".into()),
        };
        let str_header = |k: &str| headers.get(k).and_then(Value::as_str).map(str::to_owned);
        let task = str_header("task").ok_or("the message names no task")?;
        let id = str_header("id").ok_or("the message has no task id")?;
        let (hard, soft) = match headers.get("timelimit").and_then(Value::as_array) {
            Some(t) => (number(t.first()), number(t.get(1))),
            None => (None, None),
        };
        let eta = str_header("eta").as_deref().and_then(parse_time);
        let expires = str_header("expires").as_deref().and_then(parse_time);
        Ok(Message {
            tag,
            id,
            task,
            args,
            kwargs,
            embed,
            headers,
            hard,
            soft,
            eta,
            expires,
            refused,
            woke: None,
        })
    }

    /// A header as a string, if set.
    pub(crate) fn header(&self, k: &str) -> Option<&str> {
        self.headers.get(k).and_then(Value::as_str)
    }
}

/// The fields of a new task message.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outgoing {
    pub(crate) id: String,
    pub(crate) task: String,
    pub(crate) args: Vec<Value>,
    pub(crate) kwargs: Map<String, Value>,
    pub(crate) embed: Map<String, Value>,
    pub(crate) queue: String,
    pub(crate) priority: u8,
    pub(crate) root_id: Option<String>,
    pub(crate) parent_id: Option<String>,
    pub(crate) group: Option<String>,
    pub(crate) group_index: Option<u64>,
    pub(crate) countdown: Option<f64>,
    pub(crate) expires: Option<f64>,
    pub(crate) timelimit: (Option<f64>, Option<f64>),
    /// How the body is written.
    pub(crate) serializer: Serializer,
}

fn iso_of(unix: f64) -> Value {
    let ts = jiff::Timestamp::from_nanosecond((unix * 1e9) as i128)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    Value::String(ts.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string())
}

impl Outgoing {
    /// The message as kombu's Redis transport stores it, and the list it
    /// goes on.
    pub(crate) fn encode(&self, origin: &str) -> (String, String) {
        let body = self
            .serializer
            .encode(&json!([self.args, self.kwargs, self.embed]));
        let root = self.root_id.clone().unwrap_or_else(|| self.id.clone());
        let message = json!({
            "body": BASE64.encode(&body),
            "content-encoding": match self.serializer {
                Serializer::Json => "utf-8",
                Serializer::Msgpack => "binary",
            },
            "content-type": self.serializer.content_type(),
            "headers": {
                "lang": "py",
                "task": self.task,
                "id": self.id,
                "shadow": null,
                "eta": self.countdown.map(|c| iso_of(now() + c)),
                "expires": self.expires.map(|e| iso_of(now() + e)),
                "group": self.group,
                "group_index": self.group_index,
                "retries": 0,
                "timelimit": [self.timelimit.0, self.timelimit.1],
                "root_id": root,
                "parent_id": self.parent_id,
                "argsrepr": Value::Array(self.args.clone()).to_string(),
                "kwargsrepr": Value::Object(self.kwargs.clone()).to_string(),
                "origin": origin,
                "ignore_result": false,
            },
            "properties": {
                "correlation_id": self.id,
                "reply_to": new_id(),
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": self.queue},
                "priority": self.priority,
                "body_encoding": "base64",
                "delivery_tag": new_id(),
            },
        });
        (queue_key(&self.queue, self.priority), message.to_string())
    }
}

/// A fresh UUID4 string, as Celery makes task ids.
pub(crate) fn new_id() -> String {
    let mut b = [0u8; 16];
    // Random enough for ids; a failing getrandom falls back to the clock.
    if rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()).is_err() {
        let t = jiff::Timestamp::now().as_nanosecond() as u128 ^ (std::process::id() as u128) << 64;
        b = t.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A task's end, as the result backend stores it.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Success(Value),
    Failure(JsonError, String),
    Revoked(String),
}

/// A Celery serializer crew writes: how a node writes results (Celery's
/// `result_serializer`, which the Python clients of the deployment read
/// them with), and how a [`Client`](super::Client) writes task messages
/// (Celery's `task_serializer`; the Python workers must accept it, see
/// Celery's `accept_content`).
///
/// # Examples
///
/// ```
/// use crew::celery::Serializer;
///
/// assert_eq!("msgpack".parse::<Serializer>().unwrap(), Serializer::Msgpack);
/// assert_eq!(Serializer::default(), Serializer::Json);
/// assert!("pickle".parse::<Serializer>().is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Serializer {
    /// JSON, Celery's default.
    #[default]
    Json,
    /// msgpack (`"msgpack"` in Celery's settings).
    Msgpack,
}

/// How a node writes results: a [`Serializer`].
///
/// # Examples
///
/// ```
/// use crew::celery::ResultSerializer;
///
/// assert_eq!("msgpack".parse::<ResultSerializer>().unwrap(), ResultSerializer::Msgpack);
/// ```
pub type ResultSerializer = Serializer;

impl std::str::FromStr for Serializer {
    type Err = crew_core::Error;

    fn from_str(s: &str) -> crew_core::Result<Serializer> {
        match s.trim() {
            "json" => Ok(Serializer::Json),
            "msgpack" => Ok(Serializer::Msgpack),
            other => Err(crew_core::Error::invalid_input(format!(
                "crew writes Celery payloads as `json` or `msgpack`, not `{other}`"
            ))),
        }
    }
}

impl Serializer {
    /// `v` as this serializer writes it.
    pub(crate) fn encode(self, v: &Value) -> Vec<u8> {
        match self {
            Serializer::Json => v.to_string().into_bytes(),
            // A JSON value always has a msgpack form (maps keyed by strings).
            Serializer::Msgpack => rmp_serde::to_vec(v).unwrap_or_default(),
        }
    }

    /// The content type kombu names this serializer by.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Serializer::Json => "application/json",
            Serializer::Msgpack => "application/x-msgpack",
        }
    }
}

/// A stored value (a chord member's part, a result) in JSON or msgpack,
/// whichever it is: a deployment's Python workers write theirs with their
/// own `result_serializer`.
pub(crate) fn decode_stored(raw: &[u8]) -> Option<Value> {
    serde_json::from_slice(raw)
        .ok()
        .or_else(|| rmp_serde::from_slice(raw).ok())
}

/// The payload of `celery-task-meta-<id>`.
pub(crate) fn meta(id: &str, outcome: &Outcome) -> Value {
    let (status, result, traceback) = match outcome {
        Outcome::Success(v) => ("SUCCESS", v.clone(), Value::Null),
        Outcome::Failure(e, tb) => ("FAILURE", exception(e), Value::String(tb.clone())),
        Outcome::Revoked(reason) => (
            "REVOKED",
            exception(&JsonError {
                exc_type: "TaskRevokedError".into(),
                exc_module: "celery.exceptions".into(),
                message: reason.clone(),
            }),
            Value::Null,
        ),
    };
    json!({
        "status": status,
        "result": result,
        "traceback": traceback,
        "children": [],
        "date_done": now_iso(),
        "task_id": id,
    })
}

/// A task's state and result as a chord header records them:
/// `[1, id, state, result]`.
pub(crate) fn chord_part(id: &str, outcome: &Outcome) -> Value {
    let (state, result) = match outcome {
        Outcome::Success(v) => ("SUCCESS", v.clone()),
        Outcome::Failure(e, _) => ("FAILURE", exception(e)),
        Outcome::Revoked(r) => (
            "REVOKED",
            exception(&JsonError {
                exc_type: "TaskRevokedError".into(),
                exc_module: "celery.exceptions".into(),
                message: r.clone(),
            }),
        ),
    };
    json!([1, id, state, result])
}

pub(crate) fn exception(e: &JsonError) -> Value {
    json!({"exc_type": e.exc_type, "exc_message": [e.message], "exc_module": e.exc_module})
}

/// Reads a stored result back: `Ok(value)` for SUCCESS, `Err` for a failure
/// or revocation, `None` while not finished.
pub(crate) fn read_meta(raw: &[u8]) -> Option<Result<Value, JsonError>> {
    let v = decode_stored(raw)?;
    let status = v.get("status").and_then(Value::as_str)?;
    let result = v.get("result").cloned().unwrap_or(Value::Null);
    match status {
        "SUCCESS" => Some(Ok(result)),
        "FAILURE" | "REVOKED" => {
            let s = |k: &str| {
                result
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let message = match result.get("exc_message") {
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| x.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            Some(Err(JsonError {
                exc_type: s("exc_type"),
                exc_module: s("exc_module"),
                message,
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_map_to_kombu_lists() {
        assert_eq!(queue_key("celery", 0), "celery");
        assert_eq!(queue_key("celery", 2), "celery");
        assert_eq!(queue_key("celery", 3), "celery\x06\x163");
        assert_eq!(queue_key("celery", 8), "celery\x06\x166");
        assert_eq!(queue_key("celery", 9), "celery\x06\x169");
    }

    #[test]
    fn an_outgoing_message_reads_back() {
        let out = Outgoing {
            id: new_id(),
            task: "tasks.add".into(),
            args: vec![json!(1), json!(2)],
            queue: "q".into(),
            priority: 6,
            timelimit: (Some(5.0), None),
            expires: Some(60.0),
            ..Outgoing::default()
        };
        let (key, raw) = out.encode("me");
        assert_eq!(key, "q\x06\x166");
        let m = Message::parse(raw.as_bytes()).unwrap();
        assert_eq!(
            (m.task.as_str(), m.id.as_str()),
            ("tasks.add", out.id.as_str())
        );
        assert_eq!(m.args, [json!(1), json!(2)]);
        assert_eq!((m.hard, m.soft), (Some(5.0), None));
        let left = m.expires.unwrap() - now();
        assert!(left > 30.0 && left <= 60.0, "{left}");
    }

    /// The JSON envelope of a `tasks.add` message to queue `q`, to edit.
    fn add_envelope() -> Value {
        let (_, raw) = Outgoing {
            id: new_id(),
            task: "tasks.add".into(),
            queue: "q".into(),
            ..Outgoing::default()
        }
        .encode("me");
        serde_json::from_str(&raw).unwrap()
    }

    #[test]
    fn msgpack_bodies_read_and_pickle_is_refused() {
        let mut env = add_envelope();
        let body = rmp_serde::to_vec(&json!([[1, 2.5, "x"], {"k": [true]}, {}])).unwrap();
        env["content-type"] = "application/x-msgpack".into();
        env["body"] = BASE64.encode(&body).into();
        let m = Message::parse(env.to_string().as_bytes()).unwrap();
        assert_eq!(m.args, [json!(1), json!(2.5), json!("x")]);
        assert_eq!(m.kwargs["k"], json!([true]));
        assert!(m.refused.is_none());
        // Pickle is never read: the task fails, saying why.
        env["content-type"] = "application/x-python-serialize".into();
        env["body"] = BASE64.encode(b"cos\nsystem\n(S'true'\ntR.").into();
        let m = Message::parse(env.to_string().as_bytes()).unwrap();
        let e = m.refused.unwrap();
        assert_eq!(e.exc_type, "ContentDisallowed");
        assert!(e.message.contains("does not unpickle"), "{}", e.message);
        assert!(m.args.is_empty());
    }

    #[test]
    fn zlib_bodies_read_and_other_compressions_fail_the_task() {
        use std::io::Write as _;
        let mut env = add_envelope();
        let body = json!([[1, 2], {"k": "v"}, {}]).to_string();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(body.as_bytes()).unwrap();
        env["headers"]["compression"] = "application/x-gzip".into();
        env["body"] = BASE64.encode(z.finish().unwrap()).into();
        let m = Message::parse(env.to_string().as_bytes()).unwrap();
        assert!(m.refused.is_none(), "{:?}", m.refused);
        assert_eq!(m.args, [json!(1), json!(2)]);
        assert_eq!(m.kwargs["k"], json!("v"));
        // A gzip stream under the same name.
        let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        g.write_all(body.as_bytes()).unwrap();
        env["body"] = BASE64.encode(g.finish().unwrap()).into();
        let m = Message::parse(env.to_string().as_bytes()).unwrap();
        assert_eq!(m.args, [json!(1), json!(2)]);
        // Not zlib after all: the task fails, the message is still read.
        env["body"] = BASE64.encode(body.as_bytes()).into();
        let m = Message::parse(env.to_string().as_bytes()).unwrap();
        let e = m.refused.unwrap();
        assert_eq!(
            (e.exc_type.as_str(), e.exc_module.as_str()),
            ("DecodeError", "kombu.exceptions")
        );
        assert!(e.message.contains("does not decompress"), "{}", e.message);
        // A compression crew does not read: named in the failure.
        env["headers"]["compression"] = "application/x-bz2".into();
        let m = Message::parse(env.to_string().as_bytes()).unwrap();
        assert_eq!(m.id, env["headers"]["id"].as_str().unwrap());
        let e = m.refused.unwrap();
        assert!(e.message.contains("`application/x-bz2`"), "{}", e.message);
    }

    #[test]
    fn a_msgpack_message_is_written_as_kombu_writes_one() {
        let out = Outgoing {
            id: new_id(),
            task: "py.mul".into(),
            args: vec![json!(6), json!("x")],
            queue: "q".into(),
            serializer: Serializer::Msgpack,
            ..Outgoing::default()
        };
        let (_, raw) = out.encode("me");
        let env: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(env["content-type"], "application/x-msgpack");
        assert_eq!(env["content-encoding"], "binary");
        let body = BASE64.decode(env["body"].as_str().unwrap()).unwrap();
        let v: Value = rmp_serde::from_slice(&body).unwrap();
        assert_eq!(v[0], json!([6, "x"]));
        let m = Message::parse(raw.as_bytes()).unwrap();
        assert_eq!(m.args, [json!(6), json!("x")]);
    }

    #[test]
    fn naive_times_are_utc() {
        let a = parse_time("2026-01-02T03:04:05.5").unwrap();
        let b = parse_time("2026-01-02T03:04:05.5+00:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(parse_time("2026-01-02T04:04:05.5+01:00").unwrap(), b);
    }

    #[test]
    fn failures_read_back_as_exceptions() {
        let e = JsonError::type_error("bad");
        for ser in [ResultSerializer::Json, ResultSerializer::Msgpack] {
            let raw = ser.encode(&meta("x", &Outcome::Failure(e.clone(), "tb".into())));
            assert_eq!(read_meta(&raw), Some(Err(e.clone())));
            let raw = ser.encode(&meta("x", &Outcome::Success(json!([1, "a", 2.5]))));
            assert_eq!(read_meta(&raw), Some(Ok(json!([1, "a", 2.5]))));
        }
    }
}
