//! The audit log of denied connections: one `tracing` event per denied new
//! connection on target `vswitch::policy_audit`, rate limited per worker so a
//! port scan cannot flood the log (the drop counters still count everything).
//! Off unless `[policy] audit_per_s` or `vswitchd --policy-audit-per-s` is set.

/// The largest burst one worker logs at once (the bucket's size is the rate for
/// rates below it).
pub const AUDIT_BURST: u64 = 20;

/// Token bucket, per worker (no shared state, no lock).
pub struct AuditLimiter {
    /// Events per second; 0: the audit log is off.
    rate: u64,
    burst: u64,
    tokens: u64,
    last_ns: u64,
    /// Events skipped since the last one logged (reported with the next).
    pub suppressed: u64,
}

impl Default for AuditLimiter {
    /// Off.
    fn default() -> Self {
        AuditLimiter::new(0)
    }
}

impl AuditLimiter {
    /// At most `per_s` events per second (bursts of up to [`AUDIT_BURST`]); 0: off.
    pub fn new(per_s: u32) -> AuditLimiter {
        let rate = u64::from(per_s);
        let burst = rate.min(AUDIT_BURST);
        AuditLimiter {
            rate,
            burst,
            tokens: burst,
            last_ns: 0,
            suppressed: 0,
        }
    }

    #[inline]
    pub fn enabled(&self) -> bool {
        self.rate > 0
    }

    /// Takes one token if there is one (counts a suppressed event otherwise).
    pub fn allow(&mut self, now_ns: u64) -> bool {
        if self.rate == 0 {
            return false;
        }
        let refill = now_ns
            .saturating_sub(self.last_ns)
            .saturating_mul(self.rate)
            / 1_000_000_000;
        if refill > 0 {
            self.tokens = (self.tokens + refill).min(self.burst);
            self.last_ns = now_ns;
        }
        if self.tokens == 0 {
            self.suppressed += 1;
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_limits_then_refills() {
        let mut l = AuditLimiter::new(100);
        let n = (0..100).filter(|_| l.allow(1)).count() as u64;
        assert_eq!(n, AUDIT_BURST);
        assert_eq!(l.suppressed, 100 - AUDIT_BURST);
        assert!(l.allow(1 + 1_000_000_000));
        // Over 10 s at 100/s: about 1000 events, never more than rate x time + burst.
        let mut l = AuditLimiter::new(100);
        let logged = (0..100_000u64)
            .filter(|i| l.allow(i * 100_000)) // one attempt every 100 us
            .count() as u64;
        assert!((990..=1000 + AUDIT_BURST).contains(&logged), "{logged}");
    }

    #[test]
    fn off_logs_nothing() {
        let mut l = AuditLimiter::default();
        assert!(!l.enabled());
        assert!((0..10u64).all(|i| !l.allow(i * 1_000_000_000)));
    }
}
