//! The per-client rate limit of the public API (SPEC §2: 429 past 7,500 requests from one client
//! IP in any rolling 5 minutes), shared by every ingress replica through Redis.
//!
//! - **What is counted**: every request to the public API that the limiter admits, whatever its
//!   answer afterwards (a 400 or 401 costs capacity too). Refused requests (429) are not counted,
//!   so a client that keeps calling while limited gets back in as soon as its own earlier
//!   requests leave the window. Probes (`/healthz`, `/readyz`, `/metrics`) are never counted.
//! - **Exact sliding window**: one sorted set per client (`{key_prefix}rl:{client}`, the client
//!   being an IPv4 address or an IPv6 /64 prefix, [`client_ip::window_key`]), one member per
//!   admitted request scored by its admission time in ms; trimmed, counted and added to in one
//!   Lua script (`sliding_window.lua`, one round trip), with a TTL of one window. A 429 carries
//!   `Retry-After`: the seconds until the counted request that blocks the client leaves the window.
//! - **One clock**: the script reads the Redis server's clock (`TIME`), not the replica's, so
//!   replicas whose clocks disagree still count one window the same way.
//! - **Fail open**: Redis holds only what may be lost (SPEC §4). When Redis is unreachable or
//!   slower than `timeout_ms`, the request goes through: the limit protects capacity, the
//!   durable path (Kafka) never depends on it, and losing Redis must never refuse or lose a
//!   message. Such requests are counted in `carrier_ingress_rate_limit_unavailable_total`, and a
//!   warning is logged at most every [`breaker::WARN_INTERVAL`]. After a timeout or an error, requests
//!   skip Redis for [`breaker::SKIP_AFTER_FAILURE`] (through at once instead of each waiting out
//!   `timeout_ms`), then the next one tries it again. Ingress starts without Redis; the
//!   connection is made in the background and remade by itself after Redis returns.
//! - **Client IP**: the TCP peer, or from `X-Forwarded-For` when the peer is a trusted proxy
//!   (`client_ip`).
//!
//! One file per concern: `settings` (the `[rate_limit]` section), `window` (the limiter and its
//! Redis script), `breaker` (skipping Redis after a failure, throttled warnings), `middleware`
//! (the axum layer answering 429) and `client_ip` (who a request is counted against).

mod breaker;
pub(crate) mod client_ip;
mod middleware;
mod settings;
#[cfg(test)]
mod test_redis;
mod window;

pub use client_ip::{client_ip, parse_trusted_proxy};
pub(crate) use middleware::enforce;
pub use settings::RateLimitSettings;
pub use window::{Decision, RateLimiter};
