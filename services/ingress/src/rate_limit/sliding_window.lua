-- One client's sliding window, checked and updated atomically in one round trip.
--
-- KEYS[1]  the client's sorted set: one member per admitted request, score = admission time (ms)
-- ARGV[1]  limit: requests admitted in any window
-- ARGV[2]  window length (ms)
-- ARGV[3]  a member unique to this request (replica ID and counter)
-- ARGV[4]  optional: the time to use (ms); tests only. Otherwise the Redis server's clock, so every
--          ingress replica counts on the same clock whatever their own clocks say.
--
-- A request admitted at t counts until t + window (exclusive). Refused requests are not added:
-- a client that keeps calling while limited gets back in as soon as its own old requests age out.
--
-- Returns {1, count including this request, 0} when admitted, or
--         {0, count, ms until enough counted requests leave the window to admit one more}.

local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local now
if ARGV[4] then
    now = tonumber(ARGV[4])
else
    local time = redis.call('TIME')
    now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)
if count < limit then
    redis.call('ZADD', key, now, ARGV[3])
    redis.call('PEXPIRE', key, window)
    return {1, count + 1, 0}
end

-- The (count - limit + 1)-th oldest member must leave before one more fits (the oldest one when
-- count == limit; more when the limit was lowered while the window was full).
local blocking = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
local retry_ms = tonumber(blocking[2]) + window - now
return {0, count, retry_ms}
