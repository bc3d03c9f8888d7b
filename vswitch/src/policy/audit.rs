//! The audit log of denied connections: one `tracing` event per denied new
//! connection on target `vswitch::policy_audit`, rate limited per worker so a
//! port scan cannot flood the log (the drop counters still count everything).

/// Events per second one worker logs, and the burst it allows.
pub const AUDIT_RATE: u64 = 100;
pub const AUDIT_BURST: u64 = 20;

/// Token bucket, per worker (no shared state, no lock).
pub struct AuditLimiter {
    tokens: u64,
    last_ns: u64,
    /// Events skipped since the last one logged (reported with the next).
    pub suppressed: u64,
}

impl Default for AuditLimiter {
    fn default() -> Self {
        AuditLimiter {
            tokens: AUDIT_BURST,
            last_ns: 0,
            suppressed: 0,
        }
    }
}

impl AuditLimiter {
    /// Takes one token if there is one (counts a suppressed event otherwise).
    pub fn allow(&mut self, now_ns: u64) -> bool {
        let refill = now_ns
            .saturating_sub(self.last_ns)
            .saturating_mul(AUDIT_RATE)
            / 1_000_000_000;
        if refill > 0 {
            self.tokens = (self.tokens + refill).min(AUDIT_BURST);
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
        let mut l = AuditLimiter::default();
        let n = (0..100).filter(|_| l.allow(1)).count() as u64;
        assert_eq!(n, AUDIT_BURST);
        assert_eq!(l.suppressed, 100 - AUDIT_BURST);
        assert!(l.allow(1 + 1_000_000_000));
    }
}
