//! A `limit_req` zone kept in Redis (`store: redis://HOST:PORT[/DB]`):
//! every Ferry on that Redis charges the same buckets, so a fleet enforces
//! one rate. Each look is one atomic Lua script doing nginx's arithmetic
//! on Redis's clock (so the Ferries need not agree on the time); a key
//! expires once its excess has drained and it stayed idle a minute, as
//! nginx's expire does.
//!
//! The connection is redis-rs's `ConnectionManager`, made on the first
//! request and reconnecting by itself; no request waits on Redis longer
//! than [`TIMEOUT`]. A failure is the caller's to decide
//! (`on_store_error`); the first of an outage is logged and every one is
//! counted.
//!
//! nginx counterpart: `ngx_http_limit_req_lookup` and
//! `ngx_http_limit_req_account` on a shared memory zone; Redis stands for
//! the memory the fleet shares.

use super::req::Lookup;
use ferry_conf::RedisUrl;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The most a request waits on Redis.
pub(crate) const TIMEOUT: Duration = Duration::from_millis(50);

/// What a look does to the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Check against the burst only (a zone before the route's last).
    Check,
    /// Check, and charge when within the burst (the route's last zone).
    Charge,
    /// Charge without a check (nginx's account step, every zone passed).
    Force,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Check => "check",
            Mode::Charge => "charge",
            Mode::Force => "force",
        }
    }
}

/// KEYS[1]: the bucket. ARGV: rate (thousandths per second), burst
/// (thousandths), mode. Returns {busy, excess}. nginx's arithmetic: the
/// elapsed ms clamped as it clamps them, the excess truncated toward 0.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local mode = ARGV[3]
local v = redis.call('HMGET', KEYS[1], 'e', 'l')
local excess = 0
local last = now
if v[1] then
  excess = tonumber(v[1])
  last = tonumber(v[2])
  local ms = now - last
  if ms < -60000 then ms = 1 elseif ms < 0 then ms = 0 end
  excess = excess - math.floor(rate * ms / 1000) + 1000
  if excess < 0 then excess = 0 end
  if mode ~= 'force' and excess > burst then return {1, excess} end
  if ms ~= 0 then last = now end
end
if mode ~= 'check' then
  redis.call('HSET', KEYS[1], 'e', excess, 'l', last)
  redis.call('PEXPIRE', KEYS[1], math.floor(excess * 1000 / rate) + 60000)
end
return {0, excess}
"#;

/// One zone's buckets in Redis.
pub(crate) struct RedisBuckets {
    zone: String,
    url: String,
    client: redis::Client,
    manager: OnceLock<ConnectionManager>,
    script: redis::Script,
    /// Redis could not be reached on the last look: an outage is logged
    /// once, when it begins.
    down: AtomicBool,
}

impl RedisBuckets {
    /// The zone's store; nothing is connected until the first request.
    pub(crate) fn new(zone: &str, url: &RedisUrl) -> Result<RedisBuckets, String> {
        let client = redis::Client::open(url.url.as_str())
            .map_err(|e| format!("limit_req zone {zone}: {}: {e}", url.url))?;
        Ok(RedisBuckets {
            zone: zone.to_string(),
            url: url.url.clone(),
            client,
            manager: OnceLock::new(),
            script: redis::Script::new(SCRIPT),
            down: AtomicBool::new(false),
        })
    }

    /// The connection, made (lazily: it connects on its first command) in
    /// the runtime of the first request that needs it.
    fn manager(&self) -> Result<ConnectionManager, String> {
        if let Some(m) = self.manager.get() {
            return Ok(m.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(500));
        let made = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(|e| e.to_string())?;
        Ok(self.manager.get_or_init(|| made).clone())
    }

    /// Redis's key for a request's key.
    fn redis_key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(17 + self.zone.len() + key.len());
        k.extend_from_slice(b"ferry:limit_req:");
        k.extend_from_slice(self.zone.as_bytes());
        k.push(b':');
        k.extend_from_slice(key);
        k
    }

    /// One look at `key`'s bucket; `Err` when Redis did not answer within
    /// [`TIMEOUT`] (logged when an outage begins).
    pub(crate) async fn lookup(
        &self,
        key: &[u8],
        rate: u64,
        burst: u64,
        mode: Mode,
    ) -> Result<Lookup, String> {
        let answer = match self.manager() {
            Ok(mut m) => {
                let mut call = self.script.key(self.redis_key(key));
                call.arg(rate).arg(burst).arg(mode.arg());
                match tokio::time::timeout(TIMEOUT, call.invoke_async::<(i64, i64)>(&mut m)).await {
                    Ok(Ok(a)) => Ok(a),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {} ms", TIMEOUT.as_millis())),
                }
            }
            Err(e) => Err(e),
        };
        match answer {
            Ok((busy, excess)) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    log::warn!(
                        "limit_req zone \"{}\": {} answers again",
                        self.zone,
                        self.url
                    );
                }
                let excess = excess.max(0) as u64;
                Ok(match (busy, mode) {
                    (1, _) => Lookup::Busy(excess),
                    (_, Mode::Check) => Lookup::Again(excess),
                    _ => Lookup::Charged(excess),
                })
            }
            Err(e) => {
                if !self.down.swap(true, Ordering::Relaxed) {
                    log::error!(
                        "limit_req zone \"{}\": the store {} cannot be reached ({e}); on_store_error decides until it answers",
                        self.zone,
                        self.url
                    );
                }
                Err(e)
            }
        }
    }
}
