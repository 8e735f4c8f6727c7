//! Server-side scripts, so that what they read and what they change cannot be pulled
//! apart by another client in between.

use std::sync::LazyLock;

use redis::Script;

/// Trims a stream below the oldest entry any consumer group on it still needs.
///
/// For each group that is its oldest pending entry (delivered, not acknowledged), or,
/// with nothing pending, its last delivered entry (everything after it is undelivered).
/// The stream is trimmed with `XTRIM MINID ~` below the oldest of these, so entries a
/// group has not acknowledged, or not yet been given, are never removed. `~` removes only
/// whole internal nodes (at most `stream-node-max-entries`, 100 by default), so up to
/// that many acknowledged entries stay as a tail. A stream without groups is left alone.
/// Runs atomically: a group created meanwhile cannot lose entries. Returns the number
/// of entries removed.
pub static TRIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if not ok or #groups == 0 then return 0 end
local function older(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
  return ams < bms or (ams == bms and aseq < bseq)
end
local floor = nil
for _, group in ipairs(groups) do
  local name, pending, last
  for i = 1, #group, 2 do
    local field = group[i]
    if field == 'name' then name = group[i + 1]
    elseif field == 'pending' then pending = group[i + 1]
    elseif field == 'last-delivered-id' then last = group[i + 1] end
  end
  local needed = last
  if pending > 0 then needed = redis.call('XPENDING', KEYS[1], name)[2] end
  if floor == nil or older(needed, floor) then floor = needed end
end
return redis.call('XTRIM', KEYS[1], 'MINID', '~', floor)
",
    )
});

/// Removes from a group the consumers with nothing pending that have not read for
/// longer than ARGV[2] ms (consumers of processes long gone: every restart of a pod
/// brings a new name). A consumer with pending entries stays until they are reclaimed:
/// removing it would drop them from the group's pending list. Returns the names removed.
pub static FORGET_CONSUMERS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return {} end
local removed = {}
for _, consumer in ipairs(consumers) do
  local name, pending, idle
  for i = 1, #consumer, 2 do
    local field = consumer[i]
    if field == 'name' then name = consumer[i + 1]
    elseif field == 'pending' then pending = consumer[i + 1]
    elseif field == 'idle' then idle = consumer[i + 1] end
  end
  if pending == 0 and idle > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    table.insert(removed, name)
  end
end
return removed
",
    )
});

/// Moves one dead letter (ARGV[1], in KEYS[1]) back onto its stream (KEYS[2]) with its
/// original fields, and deletes it: replaying the same letter twice adds it once.
/// Returns 1 when moved, 0 when no such letter exists (any more).
pub static REPLAY_DEAD_LETTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return 0 end
local fields = found[1][2]
local original = {}
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 5) ~= 'dead_' then
    table.insert(original, fields[i])
    table.insert(original, fields[i + 1])
  end
end
if #original > 0 then redis.call('XADD', KEYS[2], '*', unpack(original)) end
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
",
    )
});
