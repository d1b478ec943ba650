"""The Lua scripts the Redis layer runs, loaded once per server and called by SHA.

Every script touches keys of one shard only, all sharing the shard's hash tag, so that each
runs on one node of a Redis Cluster as well as on a plain server.

Message records (list elements) are ``b"<deadline ms> <channel> ...\\n<payload>"``: the
deadline in milliseconds since the epoch (followed by ``/<group>`` for a group message),
then the names of the receiving process's
channels that get this payload (one for ``send``, several for a ``group_send`` that reaches
several channels of one process), then the sealed message. Channel names contain no space
or newline (the name rules forbid them), so the header needs no escaping.

Keys, with ``P`` the prefix and ``T`` the shard's hash tag (empty outside a cluster):

* ``P{T}:in:<process>``  list, one process's inbox (records of its channels, FIFO)
* ``P{T}:n:<process>``   hash, channel -> messages ``send`` queued for it and not yet
  received (in the inbox or in the receiving process's buffer): the count that makes
  ``send`` raise ``ChannelFull``. Group messages are not counted here.
* ``P{T}:f:<process>``   set of the process's channels whose local backlog (direct and
  group messages buffered there) is at capacity; the receiving process adds a channel when
  it fills and removes it when it drains. ``send`` and ``group_send`` refuse a marked
  channel; a group message that arrives for a full channel anyway (sent before the mark)
  is dropped, counted and logged by the receiving process.
* ``P{T}:ch:<name>``     list, a named (not process-specific) channel, e.g. a worker queue
* ``P{T}:g:<group>``     sorted set, member channel -> membership deadline (ms)
* ``P{T}:alive:<process>`` a marker the process refreshes; its absence means that Redis
  lost its data (a restart), and memberships must be restored
* ``P{T}:gc:<group>``    hash, member channel -> capacity, for members whose capacity is
  not the default one
* ``P{T}:gm:<group>``    hash, the group's members by process, made by ``group_send`` from
  the sorted set and kept until the membership changes: process -> ``"<count>:<names>"``
  (names space-separated; named channels under ``.``, which no process name contains). A
  ``group_send`` then costs one hash read and one push per process, however many members.
  Only this version's ``group_add`` and ``group_discard`` know to drop it: every process
  sharing a Redis must run the same kanal version.
* ``P{T}:h:<group>``     stream, a group's history (groups matching a ``history`` pattern):
  entry id ``<offset>-0``, fields ``t`` (Redis's time, ms) and ``d`` (the sealed payload);
  capped at the history's size (MAXLEN), entries past its ttl trimmed (MINID)
* ``P{T}:hm:<group>``    hash, the history's epoch (``e``) and last offset (``o``); its loss
  (a restart without persistence) starts a new epoch, which tells clients that the old
  positions cannot be recovered

A group message of a group with history has ``@<epoch>:<offset>`` after the group name in
its record's header: the position, which the receiving process adds to the message.
* ``P{T}:pz:<group>``    sorted set, presence ref -> deadline (ms) of its last heartbeat
* ``P{T}:pm:<group>``    hash, presence ref -> its entry (key, metadata, how the group is
  told: sealed by the layer's codec). Both on the group's shard, both expiring with the
  latest deadline, so a group whose every process died leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

__all__ = [
    "ACK",
    "GROUP_ADD",
    "GROUP_DISCARD",
    "GROUP_HISTORY",
    "GROUP_SEND",
    "GROUP_SEND_HISTORY",
    "PRESENCE_READ",
    "PRESENCE_WRITE",
    "SCRIPTS",
    "SEND",
    "Script",
    "now_ms",
]


def now_ms() -> int:
    """The time of the records' deadlines: wall-clock milliseconds since the epoch.

    Deadlines cross machines (a sender's, the scripts', a receiver's), so a monotonic
    clock will not do.
    """
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script's source and SHA1 (what EVALSHA names it by)."""

    name: str
    source: str
    #: The SHA1 Redis knows the script by once loaded (computed once: every call uses it).
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


# Process-specific channel of another process. KEYS: inbox, counts, full marks.
# ARGV: channel, capacity, record, ttl ms.
# Returns 1 if queued, 0 if the channel is full (its count of sent messages reached
# capacity, or the receiving process marked its backlog full).
SEND = Script(
    "send",
    """
local n = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
if n > tonumber(ARGV[2]) or redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[1], -1)
  return 0
end
redis.call('RPUSH', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
""",
)

# Named channel. KEYS: list. ARGV: capacity, record, ttl ms, now ms.
# Expired records at the head are dropped first so that they do not hold capacity.
# Returns {queued (1/0), expired records removed}.
SEND_NAMED = Script(
    "send_named",
    """
local cap = tonumber(ARGV[1])
local now = tonumber(ARGV[4])
local expired = 0
local len = redis.call('LLEN', KEYS[1])
while len >= cap do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head or tonumber(string.match(head, '^%d+')) > now then break end
  redis.call('LPOP', KEYS[1])
  expired = expired + 1
  len = len - 1
end
if len >= cap then return {0, expired} end
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, expired}
""",
)

# KEYS: group, group capacities, members by process. ARGV: channel, deadline ms, capacity
# ('' = default), ttl ms.
GROUP_ADD = Script(
    "group_add",
    """
redis.call('DEL', KEYS[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
else
  redis.call('HDEL', KEYS[2], ARGV[1])
end
return 1
""",
)

# KEYS: group, group capacities, members by process. ARGV: channel.
GROUP_DISCARD = Script(
    "group_discard",
    """
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
""",
)

# The fan-out, run once per shard. KEYS: group, group capacities, members by process.
# ARGV: now ms, deadline ms, payload, default capacity, ttl ms, key prefix of this shard,
# group name, position ('' for none: see GROUP_SEND_HISTORY). Members are grouped by
# process: each receiving process gets ONE record
# naming its member channels, so a group of 1,000 channels in one process costs one list
# push. The grouping is kept in a hash (see ``gm`` above) until a member joins, leaves or
# expires, so the usual group_send reads one hash field per process and never walks the
# members. A process's channels are checked against its set of full channels (one
# SMEMBERS per process, usually empty); nothing is counted per member: the receiving
# process enforces capacity on its backlog. Returns {delivered, {dropped}, position}.
_FANOUT = """
local now = tonumber(ARGV[1])
local entries = nil
-- The kept grouping holds only while the set it was made from is unchanged and still
-- there (a flush deletes keys in batches; an operator or an eviction may delete one).
if redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) == 0
    and redis.call('EXISTS', KEYS[1]) == 1 then
  entries = redis.call('HGETALL', KEYS[3])
end
if not entries or #entries == 0 then
  redis.call('DEL', KEYS[3])
  local members = redis.call('ZRANGE', KEYS[1], 0, -1)
  if #members == 0 then return {0, {}, position} end
  local byprocess, order = {}, {}
  for _, ch in ipairs(members) do
    -- The process is what stands between the last '.' before the '!' and the '!'.
    local process = string.match(ch, '([^.!]*)!') or '.'
    local names = byprocess[process]
    if not names then
      names = {}
      byprocess[process] = names
      order[#order + 1] = process
    end
    names[#names + 1] = ch
  end
  entries = {}
  for _, process in ipairs(order) do
    local names = byprocess[process]
    entries[#entries + 1] = process
    entries[#entries + 1] = #names .. ':' .. table.concat(names, ' ')
  end
  for i = 1, #entries, 1000 do
    redis.call('HSET', KEYS[3], unpack(entries, i, math.min(i + 999, #entries)))
  end
  -- Never outlives the memberships it was made from (PTTL is 0 in their last ms).
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl >= 0 then redis.call('PEXPIRE', KEYS[3], math.max(ttl, 1)) end
end
local deadline, payload, ttl, kp = ARGV[2], ARGV[3], ARGV[5], ARGV[6]
local defcap = tonumber(ARGV[4])
local gheader = deadline .. '/' .. ARGV[7]
if position ~= '' then gheader = gheader .. '@' .. position end
local dropped = {}
local delivered = 0
for i = 1, #entries, 2 do
  local process, value = entries[i], entries[i + 1]
  local colon = string.find(value, ':', 1, true)
  local count = tonumber(string.sub(value, 1, colon - 1))
  local names = string.sub(value, colon + 1)
  if process == '.' then
    -- Named channels: each has its own list, capacity and expired head.
    local caps = {}
    if redis.call('EXISTS', KEYS[2]) == 1 then
      local flat = redis.call('HGETALL', KEYS[2])
      for j = 1, #flat, 2 do caps[flat[j]] = tonumber(flat[j + 1]) end
    end
    for ch in string.gmatch(names, '%S+') do
      local cap = caps[ch] or defcap
      local lkey = kp .. ':ch:' .. ch
      local len = redis.call('LLEN', lkey)
      while len >= cap do
        local head = redis.call('LINDEX', lkey, 0)
        if not head or tonumber(string.match(head, '^%d+')) > now then break end
        redis.call('LPOP', lkey)
        len = len - 1
      end
      if len >= cap then
        dropped[#dropped + 1] = ch
      else
        redis.call('RPUSH', lkey, deadline .. ' ' .. ch .. '\\n' .. payload)
        redis.call('PEXPIRE', lkey, ttl)
        delivered = delivered + 1
      end
    end
  else
    local marks = redis.call('SMEMBERS', kp .. ':f:' .. process)
    if #marks > 0 then
      local full = {}
      for _, ch in ipairs(marks) do full[ch] = true end
      local accepted = {}
      for ch in string.gmatch(names, '%S+') do
        if full[ch] then
          dropped[#dropped + 1] = ch
        else
          accepted[#accepted + 1] = ch
        end
      end
      count = #accepted
      names = table.concat(accepted, ' ')
    end
    if count > 0 then
      local ikey = kp .. ':in:' .. process
      redis.call('RPUSH', ikey, gheader .. ' ' .. names .. '\\n' .. payload)
      redis.call('PEXPIRE', ikey, ttl)
      delivered = delivered + count
    end
  end
end
return {delivered, dropped, position}
"""

GROUP_SEND = Script("group_send", "local position = ARGV[8]\n" + _FANOUT)

# A group with history: the message is added to the group's stream and fanned out in one
# script, so that what members got and what the history holds cannot disagree. KEYS: as
# GROUP_SEND's, then the stream and its meta hash (epoch "e", last offset "o"). ARGV: as
# GROUP_SEND's 1-8 (the 8th, the position, is made here), then history size, ttl ms, a
# new epoch (used if the meta is missing: a history that starts, or one Redis lost), epoch
# ttl ms. The entry's id is its offset
# ("<offset>-0"), so that a read from a position is one XRANGE; its fields are the time by
# Redis's clock (one clock for every publisher, for the ttl) and the sealed payload.
# The position ("<epoch>:<offset>") goes into the records' header, outside the payload
# (which may be encrypted), and is returned for the other shards' GROUP_SEND.
_HISTORY_PROLOGUE = """
local hkey, mkey = KEYS[4], KEYS[5]
local epoch = redis.call('HGET', mkey, 'e')
if not epoch then
  -- A new epoch: whatever stream is left belongs to no epoch any more.
  epoch = ARGV[11]
  redis.call('DEL', hkey)
  redis.call('HSET', mkey, 'e', epoch, 'o', 0)
end
local offset = redis.call('HINCRBY', mkey, 'o', 1)
redis.call('PEXPIRE', mkey, ARGV[12])
local clock = redis.call('TIME')
local stamp = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('XADD', hkey, 'MAXLEN', ARGV[9], offset .. '-0', 't', stamp, 'd', ARGV[3])
-- Entries past the ttl leave from the head, up to 16 at every 8th publish (reads skip
-- them meanwhile: this only returns their memory sooner than the key's expiry would).
local cutoff = stamp - tonumber(ARGV[10])
local head = {}
if offset % 8 == 0 then head = redis.call('XRANGE', hkey, '-', '+', 'COUNT', 1) end
if #head > 0 and tonumber(head[1][2][2]) <= cutoff then
  head = redis.call('XRANGE', hkey, '-', '+', 'COUNT', 16)
  local keep = nil
  for _, entry in ipairs(head) do
    if tonumber(entry[2][2]) > cutoff then keep = entry[1] break end
  end
  if not keep then keep = (tonumber(string.match(head[#head][1], '^%d+')) + 1) .. '-0' end
  redis.call('XTRIM', hkey, 'MINID', keep)
end
redis.call('PEXPIRE', hkey, ARGV[10])
local position = epoch .. ':' .. offset
"""

GROUP_SEND_HISTORY = Script("group_send_history", _HISTORY_PROLOGUE + _FANOUT)

# A group's kept messages after a position. KEYS: stream, meta. ARGV: since epoch ('' for
# every kept message), since offset, ttl ms, a new epoch (if the meta is missing), epoch
# ttl ms, the most entries to return (-1: all). Returns {epoch, last offset, {offset,
# payload, ...}} with the entries past the ttl left out; the caller checks the epoch and
# whether the first offset follows since's.
GROUP_HISTORY = Script(
    "group_history",
    """
local epoch = redis.call('HGET', KEYS[2], 'e')
local top = 0
if not epoch then
  epoch = ARGV[4]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'e', epoch, 'o', 0)
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
else
  top = tonumber(redis.call('HGET', KEYS[2], 'o'))
end
local start = '-'
if ARGV[1] ~= '' then
  local since = tonumber(ARGV[2])
  if ARGV[1] ~= epoch or since >= top then return {epoch, top, {}} end
  start = (since + 1) .. '-0'
end
local clock = redis.call('TIME')
local cutoff = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  - tonumber(ARGV[3])
local out = {}
local limit = tonumber(ARGV[6])
if limit == 0 then return {epoch, top, out} end
local entries
if limit > 0 then
  entries = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', limit)
else
  entries = redis.call('XRANGE', KEYS[1], start, '+')
end
for _, entry in ipairs(entries) do
  if tonumber(entry[2][2]) > cutoff then
    out[#out + 1] = tonumber(string.match(entry[1], '^%d+'))
    out[#out + 1] = entry[2][4]
  end
end
return {epoch, top, out}
""",
)


# Messages left a process's buffer (received or expired there): release their capacity.
# KEYS: counts. ARGV: channel, n, channel, n, ...
ACK = Script(
    "ack",
    """
for first = 1, #ARGV, 1000 do
  local last = math.min(first + 999, #ARGV)
  local names = {}
  for i = first, last, 2 do names[#names + 1] = ARGV[i] end
  local counts = redis.call('HMGET', KEYS[1], unpack(names))
  local updates, gone = {}, {}
  for k = 1, #names do
    local n = (tonumber(counts[k]) or 0) - tonumber(ARGV[first + 2 * k - 1])
    if n > 0 then
      updates[#updates + 1] = names[k]
      updates[#updates + 1] = n
    else
      gone[#gone + 1] = names[k]
    end
  end
  if #updates > 0 then redis.call('HSET', KEYS[1], unpack(updates)) end
  if #gone > 0 then redis.call('HDEL', KEYS[1], unpack(gone)) end
end
return 1
""",
)

# One change of a group's presence (see kanal.layers._presence). KEYS: deadlines (zset),
# entries (hash). ARGV: now ms, deadline ms, ttl ms, number of adds, number of renewals,
# then the adds (ref, entry), the renewals (ref), the removals (ref). Expired entries go
# first, so whoever writes reports them, once. Returns {absent refs, {ref, entry, ...}
# removed}: the adds and renewals that found no entry, the entries expired or removed.
PRESENCE_WRITE = Script(
    "presence_write",
    """
local now, deadline, ttl = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local nadd, nrenew = tonumber(ARGV[4]), tonumber(ARGV[5])
local gone = {}
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for first = 1, #expired, 1000 do
  local refs = {unpack(expired, first, math.min(first + 999, #expired))}
  local entries = redis.call('HMGET', KEYS[2], unpack(refs))
  for k = 1, #refs do
    if entries[k] then
      gone[#gone + 1] = refs[k]
      gone[#gone + 1] = entries[k]
    end
  end
  redis.call('HDEL', KEYS[2], unpack(refs))
end
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) end
if redis.call('EXISTS', KEYS[1]) == 0 then
  -- Entries whose deadlines expired with the set (its key's TTL) are stale.
  redis.call('DEL', KEYS[2])
end
local absent = {}
local i = 6
for _ = 1, nadd do
  if redis.call('ZADD', KEYS[1], deadline, ARGV[i]) == 1 then absent[#absent + 1] = ARGV[i] end
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
for _ = 1, nrenew do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], deadline, ARGV[i])
  else
    absent[#absent + 1] = ARGV[i]
  end
  i = i + 1
end
while i <= #ARGV do
  local entry = redis.call('HGET', KEYS[2], ARGV[i])
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 and entry then
    gone[#gone + 1] = ARGV[i]
    gone[#gone + 1] = entry
  end
  redis.call('HDEL', KEYS[2], ARGV[i])
  i = i + 1
end
-- The keys live as long as the latest deadline (processes may use different TTLs).
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
  if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
end
return {absent, gone}
""",
)

# A group's unexpired presence entries. KEYS: deadlines, entries. ARGV: now ms.
# Returns {ref, entry, ...}. Read-only: expired entries are left for a writer to report.
PRESENCE_READ = Script(
    "presence_read",
    """
local refs = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf')
local result = {}
for first = 1, #refs, 1000 do
  local part = {unpack(refs, first, math.min(first + 999, #refs))}
  local entries = redis.call('HMGET', KEYS[2], unpack(part))
  for k = 1, #part do
    if entries[k] then
      result[#result + 1] = part[k]
      result[#result + 1] = entries[k]
    end
  end
end
return result
""",
)

#: Every script by SHA, for reloading them after NOSCRIPT (a restarted or new server).
SCRIPTS: dict[str, Script] = {
    script.sha: script
    for script in (
        SEND,
        SEND_NAMED,
        GROUP_ADD,
        GROUP_DISCARD,
        GROUP_SEND,
        GROUP_SEND_HISTORY,
        GROUP_HISTORY,
        ACK,
        PRESENCE_WRITE,
        PRESENCE_READ,
    )
}
