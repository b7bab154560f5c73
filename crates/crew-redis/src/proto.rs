//! What crosses Redis: task entries, result entries, cancel messages, and
//! the Lua scripts that make each step atomic. See `README.md` beside this
//! file for the protocol.

use serde::{Deserialize, Serialize};

use crew_process::remote::{RawInput, RawOutcome};

/// Bumped when an entry's layout changes; a node dead-letters entries of
/// another version instead of misreading them.
pub(crate) const VERSION: u8 = 2;

/// A task entry (field `t` of the task stream). Every version starts with
/// `version`, `driver` and `id` (see [`Header`]), so that a node can tell
/// the driver of an entry it refuses.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct TaskMsg {
    pub(crate) version: u8,
    /// The driver that wants the result (its result stream's suffix).
    pub(crate) driver: String,
    /// The task's id within that driver.
    pub(crate) id: u64,
    /// The wire name of the task (see `crew_process::remote`).
    pub(crate) entry: u64,
    pub(crate) input: RawInput,
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) retries: u32,
    pub(crate) backoff_ms: u64,
    pub(crate) spans: bool,
    /// Tell the driver when the task starts (calls; chunks need not).
    pub(crate) notify_start: bool,
    /// A call by name (`entry` is then 0): the task's name and signature
    /// fingerprint, which the entry's stream serves; its input is a
    /// `crew_process::remote::NamedCall`.
    pub(crate) named: Option<(String, u64)>,
}

/// The start of every task entry, whatever its version: postcard writes
/// fields in order, so it decodes from the front of any entry.
pub(crate) type Header = (u8, String, u64);

/// An entry of a driver's result stream (field `r`).
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Note {
    /// A worker process of `node` started task `id`.
    Started { id: u64, node: String },
    /// Task `id` ended on `node`.
    Done {
        id: u64,
        node: String,
        /// The node's worker process count (to number workers in a timeline).
        concurrency: u32,
        /// The node's `unix ns - monotonic ns`, to place its spans in time.
        shift: i64,
        outcome: RawOutcome,
    },
}

/// A cancel request (published on the queue's cancel channel).
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct CancelMsg {
    pub(crate) driver: String,
    pub(crate) ids: Vec<u64>,
}

/// What a node advertises in its heartbeat hash.
pub(crate) mod node_fields {
    pub(crate) const BUILD: &str = "build";
    pub(crate) const HOST: &str = "host";
    pub(crate) const PID: &str = "pid";
    pub(crate) const CONCURRENCY: &str = "concurrency";
    /// The CPUs the node may use on its host (`crew_core::cpu_count`).
    pub(crate) const CPUS: &str = "cpus";
    pub(crate) const RUNNING: &str = "running";
    pub(crate) const DONE: &str = "done";
    pub(crate) const FAILED: &str = "failed";
    pub(crate) const STARTED: &str = "started";
    /// The ids (hex) of the named task streams the node serves, comma
    /// separated.
    pub(crate) const NAMED: &str = "named";
}

/// `unix ns - monotonic ns` of this machine now.
pub(crate) fn clock_shift() -> i64 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    unix - crew_process::remote::monotonic_ns() as i64
}

/// Reports a finished task if, and only if, this node still holds it:
/// a node that lost its lease (it stalled and the task ran elsewhere) has
/// its late result dropped here. Writes the result only while the driver's
/// result stream exists (a driver that is gone gets nothing).
///
/// KEYS: task stream, result stream. ARGV: group, consumer, entry id, note.
pub(crate) const FINISH: &str = r#"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
if ARGV[4] ~= '' and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('XADD', KEYS[2], '*', 'r', ARGV[4])
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
return 1
"#;

/// A Lua function both `RENEW` and `FETCH` start with:
/// `count_workers(nodes set, node key prefix, build)` returns the worker
/// processes of the live nodes of `build`, those of all live nodes, and the
/// size of the nodes set they were counted from. (A macro, so that
/// `concat!` can put it at the head of both scripts.)
macro_rules! count_workers_lua {
    () => {
        r#"
local function count_workers(set, prefix, my_build)
  local build, all = 0, 0
  local names = redis.call('SMEMBERS', set)
  for _, m in ipairs(names) do
    local v = redis.call('HMGET', prefix .. m, 'build', 'concurrency')
    local c = tonumber(v[2])
    if c then
      all = all + c
      if v[1] == my_build then build = build + c end
    end
  end
  return build, all, #names
end
"#
    };
}

/// Renews this node's heartbeat and the leases of the entries it holds:
/// `XCLAIM … 0 … JUSTID` resets an entry's idle time without counting a
/// delivery, and only for entries still ours (a stale node must not steal
/// an entry back). Returns `{ids no longer ours, build workers, all
/// workers, members}`: with a heartbeat (n > 0), the worker processes of
/// the live nodes of `build` and of all live nodes, by which `FETCH` splits
/// the entries, and the size of the nodes set they were counted from (else
/// 0, 0, 0).
///
/// KEYS: task stream, node hash, nodes set. ARGV: group, consumer, heartbeat
/// ttl ms, node key prefix, build, then field/value pairs count n, the n*2
/// pairs, then entry ids.
pub(crate) const RENEW: &str = concat!(
    count_workers_lua!(),
    r#"
local n = tonumber(ARGV[6])
local fields = {}
for i = 7, 6 + 2 * n do table.insert(fields, ARGV[i]) end
if n > 0 then redis.call('HSET', KEYS[2], unpack(fields)) end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[2])
local lost = {}
for i = 7 + 2 * n, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p > 0 and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
local build, all, members = 0, 0, 0
if n > 0 then
  build, all, members = count_workers(KEYS[3], ARGV[4], ARGV[5])
end
return {lost, build, all, members}
"#
);

/// Takes over entries whose holder is gone (no heartbeat) or past its
/// lease, counting a delivery; an entry delivered more than the limit goes
/// to the dead-letter stream instead, with the reason. Forgets consumers
/// that are dead and hold nothing.
///
/// Returns `{kind, id, fields, reason}` for each entry taken: kind `run`
/// (now ours to run) or `dead` (dead-lettered; tell its driver).
///
/// KEYS: task stream, dead-letter stream, nodes set, the queue's counters
/// (`reclaimed` counts the entries taken to run again). ARGV: group,
/// consumer, lease ms, max deliveries, count, node key prefix, heartbeat
/// grace ms.
pub(crate) const RECLAIM: &str = r#"
local group, me = ARGV[1], ARGV[2]
local lease, maxd, count = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local grace = tonumber(ARGV[7])
local out = {}
local function take(id, owner, idle, delivered, why)
  local c = redis.call('XCLAIM', KEYS[1], group, me, 0, id)
  if #c == 0 or c[1] == false then
    redis.call('XACK', KEYS[1], group, id)
    return
  end
  local fields = c[1][2]
  if delivered + 1 > maxd then
    local reason = 'delivered ' .. delivered .. ' times, the limit; last holder ' .. owner .. ' ' .. why
    local args = {'XADD', KEYS[2], '*', 'reason', reason, 'stream', KEYS[1], 'entry', id}
    for _, v in ipairs(fields) do table.insert(args, v) end
    redis.call(unpack(args))
    redis.call('XACK', KEYS[1], group, id)
    redis.call('XDEL', KEYS[1], id)
    table.insert(out, {'dead', id, fields, reason})
  else
    redis.call('HINCRBY', KEYS[4], 'reclaimed', 1)
    table.insert(out, {'run', id, fields, owner .. ' ' .. why})
  end
end
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], group)
if not ok then return out end
for _, c in ipairs(consumers) do
  local name, pending, idle = c[2], tonumber(c[4]), tonumber(c[6])
  if name ~= me and redis.call('EXISTS', ARGV[6] .. name) == 0 then
    if pending == 0 then
      if idle >= grace then
        redis.call('XGROUP', 'DELCONSUMER', KEYS[1], group, name)
        redis.call('SREM', KEYS[3], name)
      end
    else
      local pend = redis.call('XPENDING', KEYS[1], group, '-', '+', count, name)
      for _, p in ipairs(pend) do
        if tonumber(p[3]) >= grace then
          take(p[1], p[2], tonumber(p[3]), tonumber(p[4]), 'stopped sending heartbeats')
        end
      end
    end
  end
end
local stale = redis.call('XPENDING', KEYS[1], group, 'IDLE', lease, '-', '+', count)
for _, p in ipairs(stale) do
  if p[2] ~= me then
    take(p[1], p[2], tonumber(p[3]), tonumber(p[4]), 'held it past its lease')
  end
end
return out
"#;

/// The live nodes that can run tasks of a build: `{workers, parallel}`,
/// the sum of their worker process counts, and how many of those can run
/// at the same time: per host, no more than the CPUs there (the most any
/// node on it reports; a node that reports none counts whole), and on the
/// driver's own host no more than its CPUs less one (at least 1): the
/// driver encodes and decodes every item of a map, and takes that CPU
/// itself while a map of short tasks runs. Forgets nodes whose heartbeat
/// expired.
///
/// KEYS: nodes set. ARGV: node key prefix, build, the driver's host.
pub(crate) const WORKERS: &str = r#"
local total = 0
local hosts = {}
for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local v = redis.call('HMGET', ARGV[1] .. n, 'build', 'concurrency', 'host', 'cpus')
  if v[1] == false then
    redis.call('SREM', KEYS[1], n)
  elseif v[1] == ARGV[2] then
    local c = tonumber(v[2]) or 0
    total = total + c
    local host = v[3] or ''
    local h = hosts[host]
    if h == nil then
      h = {workers = 0, cpus = 0, unknown = 0}
      hosts[host] = h
    end
    local cpus = tonumber(v[4])
    if cpus == nil or host == '' then
      h.unknown = h.unknown + c
    else
      h.workers = h.workers + c
      h.cpus = math.max(h.cpus, cpus)
    end
  end
end
local parallel = 0
for host, h in pairs(hosts) do
  local cpus = h.cpus
  if host == ARGV[3] then cpus = math.max(1, cpus - 1) end
  parallel = parallel + math.min(h.workers, cpus) + h.unknown
end
return {total, parallel}
"#;

/// The worker processes of a node told none: the CPUs of its host
/// (`ARGV[3]`) that the queue's live nodes there do not use yet, at least
/// 1; reserved at once by writing this node's hash (a heartbeat with its
/// build, host, CPUs, pid and concurrency), so that nodes starting together
/// on one host split its CPUs instead of each taking all of them.
///
/// KEYS: nodes set, this node's hash. ARGV: node key prefix, host, cpus,
/// heartbeat ttl ms, build, pid, this node's name, then the names of nodes
/// to leave out (of this host, with their process gone).
pub(crate) const RESERVE: &str = r#"
local skip = {}
for i = 8, #ARGV do skip[ARGV[i]] = true end
local used = 0
for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not skip[n] then
    local v = redis.call('HMGET', ARGV[1] .. n, 'host', 'concurrency')
    if v[1] == ARGV[2] then used = used + (tonumber(v[2]) or 0) end
  end
end
local mine = math.max(1, tonumber(ARGV[3]) - used)
redis.call('HSET', KEYS[2], 'build', ARGV[5], 'host', ARGV[2], 'cpus', ARGV[3],
  'pid', ARGV[6], 'concurrency', mine)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('SADD', KEYS[1], ARGV[7])
return mine
"#;

/// A node's read when it may take more than its free worker processes
/// (`CREW_PREFETCH`): from each stream, no more than brings what this node
/// holds to its fair share (the entries waiting and held, split over the
/// live nodes by their worker processes: a node of 3 takes 3 entries for
/// every one a node of 1 takes), and at least one per free worker process.
/// Without it, the first node to read after a map was queued takes every
/// chunk its prefetch allows, and the other nodes idle while it runs them
/// one after the other; split by nodes rather than workers, a small node
/// added beside a big one would hold back as many entries as the big one.
/// Does not block. Returns the entries still waiting after the read (over
/// all streams), then `{stream, entries}` for each stream read.
///
/// KEYS: nodes set, then the streams (the build's first). ARGV: group,
/// consumer, free worker processes, room (free plus prefetch left),
/// entries this node holds, this node's worker processes, node key
/// prefix, build, then as of the node's last heartbeat (`RENEW`): the
/// worker processes of the live nodes of its build (who serve the build's
/// stream) and of all live nodes (who may serve a named stream), and the
/// size of the nodes set. When the set changed size since (a node came or
/// was forgotten), the counts are taken afresh.
pub(crate) const FETCH: &str = concat!(
    count_workers_lua!(),
    r#"
local free, room, held = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local mine, build, all = tonumber(ARGV[6]), tonumber(ARGV[9]), tonumber(ARGV[10])
if redis.call('SCARD', KEYS[1]) ~= tonumber(ARGV[11]) then
  build, all = count_workers(KEYS[1], ARGV[7], ARGV[8])
end
local out = {0}
for i = 2, #KEYS do
  local len = redis.call('XLEN', KEYS[i])
  if len > 0 then
    local pending = redis.call('XPENDING', KEYS[i], ARGV[1])[1]
    local waiting = len - pending
    if waiting > 0 then
      local workers = all
      if i == 2 then workers = build end
      workers = math.max(workers, mine)
      local share = math.ceil(len * mine / workers) - held
      local count = math.max(free, math.min(room, share))
      if count > 0 then
        local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', count, 'STREAMS', KEYS[i], '>')
        if r then
          table.insert(out, r[1])
          waiting = waiting - #r[1][2]
          room = room - #r[1][2]
          free = math.max(free - #r[1][2], 0)
          held = held + #r[1][2]
        end
      end
      out[1] = out[1] + waiting
    end
  end
end
return out
"#
);

/// Deletes the entries no node has taken yet; returns their ids.
///
/// KEYS: task stream. ARGV: group, entry ids.
pub(crate) const CANCEL_WAITING: &str = r#"
local out = {}
for i = 2, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 0 then
    if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then table.insert(out, ARGV[i]) end
  end
end
return out
"#;
