//! Throttles password guessing per username and per client address, before any argon2 work.
//!
//! Each username and each client address has an allowance of attempts that refills evenly over
//! a window (GCRA from `governor`). Beyond it `/login` answers 429 with `Retry-After` without
//! checking the password, so guessing costs the attacker time and costs us nothing.
//!
//! Addresses are the TCP peer's. `X-Forwarded-For` is deliberately not trusted: any client can
//! write it, and believing it would let one client pose as a thousand. Behind a reverse proxy
//! every client therefore shares the proxy's allowance; raise `--login-attempts-per-address`
//! there. IPv6 clients are keyed by their /64, since one host usually owns a whole /64.
//!
//! Every attempt is counted, successful ones included: governor can neither peek at nor refund
//! an allowance, and counting before the check is what stops a burst of concurrent guesses from
//! all getting through before the first failure is recorded.

use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Settings of the throttle (see `ServeArgs` for the flags).
#[derive(Clone, Copy, Debug)]
pub struct ThrottleConfig {
    /// Attempts per username per `window`.
    pub per_user: NonZeroU32,
    /// Attempts per client address per `window`.
    pub per_address: NonZeroU32,
    /// The window over which an allowance refills completely.
    pub window: Duration,
    /// Most usernames, and most addresses, remembered at once.
    pub max_keys: usize,
    /// How long a throttled answer is held back.
    pub delay: Duration,
}

/// Why an attempt may not go ahead, and when the next one may.
#[derive(Debug, PartialEq)]
pub struct Throttled {
    /// Whole seconds, at least 1, until the next attempt is allowed.
    pub retry_after: u64,
}

/// The per-username and per-address allowances.
pub struct LoginThrottle {
    users: DefaultKeyedRateLimiter<u64>,
    addresses: DefaultKeyedRateLimiter<IpAddr>,
    // Usernames are keyed by a keyed hash, so a 16 KiB username costs 8 bytes to remember and
    // nobody can pick colliding names without knowing the random key.
    hasher: std::collections::hash_map::RandomState,
    config: ThrottleConfig,
    started: Instant,
    last_eviction_ms: AtomicU64,
}

impl std::fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginThrottle")
            .field("config", &self.config)
            .field("users", &self.users.len())
            .field("addresses", &self.addresses.len())
            .finish()
    }
}

/// Idle keys are dropped this often, so memory follows the recent attackers, not all of them.
const EVICT_EVERY: Duration = Duration::from_secs(60);
/// With a full table, eviction is retried at most this often (it walks every key).
const EVICT_WHEN_FULL_EVERY: Duration = Duration::from_secs(1);

fn quota(per_window: NonZeroU32, window: Duration) -> Quota {
    let period = (window / per_window.get()).max(Duration::from_nanos(1));
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(per_window)
}

/// One key per host: IPv4 addresses as they are, IPv6 by /64, IPv4-mapped IPv6 as IPv4.
fn address_key(addr: Option<IpAddr>) -> IpAddr {
    match addr.map(|a| a.to_canonical()) {
        Some(IpAddr::V6(v6)) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        Some(v4) => v4,
        // warp always knows the peer on TCP; if it ever does not, such clients share one key.
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

impl LoginThrottle {
    /// An empty throttle.
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            users: RateLimiter::keyed(quota(config.per_user, config.window)),
            addresses: RateLimiter::keyed(quota(config.per_address, config.window)),
            hasher: std::collections::hash_map::RandomState::new(),
            config,
            started: Instant::now(),
            last_eviction_ms: AtomicU64::new(0),
        }
    }

    /// How long a throttled answer is held back, so a client that ignores `Retry-After` gets
    /// one answer per connection per delay rather than thousands.
    pub fn delay(&self) -> Duration {
        self.config.delay
    }

    /// Counts an attempt for `user` from `addr`, or says why it must wait. The address is
    /// checked first so that throttled clients cannot add usernames to the table.
    pub fn check(&self, user: &str, addr: Option<IpAddr>) -> Result<(), Throttled> {
        self.evict_idle();
        let addr = address_key(addr);
        let user = self.hasher.hash_one(user);
        self.check_one(&self.addresses, &addr)?;
        self.check_one(&self.users, &user)
    }

    fn check_one<K>(&self, limiter: &DefaultKeyedRateLimiter<K>, key: &K) -> Result<(), Throttled>
    where
        K: Clone + std::hash::Hash + Eq,
    {
        // Full even after eviction: every remembered key is mid-attack. Refusing everyone until
        // keys go idle (rather than forgetting someone) keeps guarded usernames guarded; filling
        // the table takes max_keys addresses, or max_keys / per_address of them for usernames.
        if limiter.len() >= self.config.max_keys {
            return Err(Throttled {
                retry_after: EVICT_WHEN_FULL_EVERY.as_secs().max(1),
            });
        }
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(limiter.clock().now());
            Throttled {
                retry_after: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            }
        })?;
        Ok(())
    }

    /// Drops keys whose allowance has refilled (they behave exactly as unknown keys), at most
    /// once a minute, or once a second while a table is full.
    fn evict_idle(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_eviction_ms.load(Ordering::Relaxed);
        let full = self.users.len() >= self.config.max_keys
            || self.addresses.len() >= self.config.max_keys;
        let every = if full {
            EVICT_WHEN_FULL_EVERY
        } else {
            EVICT_EVERY
        };
        if now.saturating_sub(last) < every.as_millis() as u64 {
            return;
        }
        // One request does the walk; the others carry on.
        if self
            .last_eviction_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        self.users.retain_recent();
        self.users.shrink_to_fit();
        self.addresses.retain_recent();
        self.addresses.shrink_to_fit();
        if self.users.len() >= self.config.max_keys || self.addresses.len() >= self.config.max_keys
        {
            tracing::warn!(
                max_keys = self.config.max_keys,
                "login throttle table full of active keys: logins get 429 until some go idle"
            );
        }
    }

    /// Keys remembered now: (usernames, addresses).
    pub fn remembered(&self) -> (usize, usize) {
        (self.users.len(), self.addresses.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(per_user: u32, per_address: u32, max_keys: usize) -> LoginThrottle {
        LoginThrottle::new(ThrottleConfig {
            per_user: NonZeroU32::new(per_user).unwrap(),
            per_address: NonZeroU32::new(per_address).unwrap(),
            window: Duration::from_secs(60),
            max_keys,
            delay: Duration::ZERO,
        })
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn each_username_has_its_own_allowance() {
        let t = throttle(3, 100, 1000);
        for _ in 0..3 {
            t.check("alice", ip("10.0.0.1")).unwrap();
        }
        let e = t.check("alice", ip("10.0.0.2")).unwrap_err();
        // 3 per 60 s refills one every 20 s.
        assert!((1..=20).contains(&e.retry_after), "{e:?}");
        t.check("bob", ip("10.0.0.1")).unwrap();
    }

    #[test]
    fn each_address_has_its_own_allowance() {
        let t = throttle(100, 2, 1000);
        t.check("a", ip("10.0.0.1")).unwrap();
        t.check("b", ip("10.0.0.1")).unwrap();
        assert!(t.check("c", ip("10.0.0.1")).is_err());
        t.check("c", ip("10.0.0.2")).unwrap();
    }

    #[test]
    fn ipv6_hosts_are_keyed_by_their_slash_64() {
        let t = throttle(100, 1, 1000);
        t.check("a", ip("2001:db8:1:2::1")).unwrap();
        assert!(t.check("a", ip("2001:db8:1:2:ffff::9")).is_err());
        t.check("a", ip("2001:db8:1:3::1")).unwrap();
        // The same IPv4 client seen through an IPv6 socket is the same client.
        t.check("a", ip("10.0.0.9")).unwrap();
        assert!(t.check("a", ip("::ffff:10.0.0.9")).is_err());
    }

    #[test]
    fn throttled_addresses_add_no_usernames() {
        let t = throttle(100, 1, 1000);
        t.check("a", ip("10.0.0.1")).unwrap();
        for i in 0..50 {
            assert!(t.check(&format!("u{i}"), ip("10.0.0.1")).is_err());
        }
        assert_eq!(t.remembered(), (1, 1));
    }

    #[test]
    fn the_number_of_keys_is_capped() {
        let t = throttle(5, 5, 3);
        for i in 0..3 {
            t.check(&format!("user{i}"), ip(&format!("10.0.0.{i}")))
                .unwrap();
        }
        let e = t.check("user9", ip("10.0.0.9")).unwrap_err();
        assert_eq!(e.retry_after, 1);
        assert_eq!(t.remembered(), (3, 3));
    }
}
