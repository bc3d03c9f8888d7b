//! RFC 2544 (section 26.1) throughput: the highest offered rate at which the device
//! forwards (nearly) every frame, found by a binary search over the offered rate.
//!
//! The search is a pure function of a trial callback, so it is tested against
//! simulated devices (`tests` below) and driven by real trials in `run`.
//!
//! 1. One trial at the upper bound (the configured `max_rate`, or the highest rate
//!    the generator reached unpaced). If it passes, the device was not the limit:
//!    the result is that rate, `limited_by = "generator"`.
//! 2. Otherwise binary search between the best passing rate (initially
//!    `min_rate`, 0 by default) and the lowest failing one until they are within
//!    the resolution. The result is the highest passing rate.
//!
//! A trial *passes* when its loss is at or under the threshold (RFC 2544 asks for
//! zero; a small threshold such as 0.01 % keeps single stray drops on a busy host
//! from dominating). A trial whose generator could not reach the asked rate (within
//! 5 %) is judged by what it did offer: its offered rate becomes the new candidate,
//! so the search never claims a rate that was not actually offered.

use crate::report::SearchStep;

/// What one trial measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub offered_pps: f64,
    pub delivered_pps: f64,
    pub loss_pct: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchConfig {
    /// Highest loss (percent) a passing trial may show.
    pub loss_threshold_pct: f64,
    /// Stop when the passing and failing rates are this close (packets/s).
    pub resolution_pps: f64,
    pub min_rate: f64,
    pub max_rate: f64,
    /// Safety stop.
    pub max_trials: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub throughput_pps: f64,
    pub limited_by: &'static str,
    pub steps: Vec<SearchStep>,
}

/// Runs the search; `trial(rate)` measures one trial at `rate` packets/s. An error
/// from a trial (interrupted, socket failure) ends the search with that error.
pub fn search<E>(
    cfg: &SearchConfig,
    mut trial: impl FnMut(f64) -> Result<Outcome, E>,
) -> Result<Found, E> {
    let mut steps = Vec::new();
    let pass = |o: &Outcome| o.loss_pct <= cfg.loss_threshold_pct;
    let mut run = |rate: f64, steps: &mut Vec<SearchStep>| -> Result<(bool, f64), E> {
        let o = trial(rate)?;
        let ok = pass(&o);
        steps.push(SearchStep {
            rate,
            offered_pps: o.offered_pps,
            delivered_pps: o.delivered_pps,
            loss_pct: o.loss_pct,
            pass: ok,
        });
        // Judge by what was offered when the generator fell short of the target.
        let effective = if o.offered_pps < rate * 0.95 {
            o.offered_pps
        } else {
            rate
        };
        Ok((ok, effective))
    };

    let (ok, top) = run(cfg.max_rate, &mut steps)?;
    if ok {
        return Ok(Found {
            throughput_pps: top,
            limited_by: "generator",
            steps,
        });
    }
    let mut lo = cfg.min_rate.max(0.0);
    let mut hi = top.min(cfg.max_rate);
    let resolution = cfg.resolution_pps.max(1.0);
    let mut n = 1;
    while hi - lo > resolution && n < cfg.max_trials {
        let mid = (lo + hi) / 2.0;
        let (ok, eff) = run(mid, &mut steps)?;
        n += 1;
        if ok {
            lo = lo.max(eff.min(mid));
        } else {
            hi = eff.min(mid).max(lo);
        }
    }
    Ok(Found {
        throughput_pps: lo,
        limited_by: "dut",
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    /// A device that forwards at most `cap` packets/s and drops the excess.
    fn capped(cap: f64) -> impl FnMut(f64) -> Result<Outcome, Infallible> {
        move |rate| {
            let d = rate.min(cap);
            Ok(Outcome {
                offered_pps: rate,
                delivered_pps: d,
                loss_pct: (rate - d) / rate * 100.0,
            })
        }
    }

    fn cfg(max: f64, res: f64) -> SearchConfig {
        SearchConfig {
            loss_threshold_pct: 0.0,
            resolution_pps: res,
            min_rate: 0.0,
            max_rate: max,
            max_trials: 64,
        }
    }

    #[test]
    fn converges_on_a_capacity_limit() {
        let Ok(f) = search(&cfg(1_000_000.0, 1000.0), capped(312_345.0));
        assert_eq!(f.limited_by, "dut");
        assert!(f.throughput_pps <= 312_345.0, "{}", f.throughput_pps);
        assert!(
            f.throughput_pps >= 312_345.0 - 1000.0,
            "{}",
            f.throughput_pps
        );
        // log2(1e6 / 1e3) ~ 10 halvings plus the first trial.
        assert!(f.steps.len() <= 12, "{}", f.steps.len());
        assert!(!f.steps[0].pass);
    }

    #[test]
    fn loss_threshold_moves_the_answer() {
        // 1 % allowed: the device passes up to cap / 0.99.
        let mut c = cfg(1_000_000.0, 100.0);
        c.loss_threshold_pct = 1.0;
        let Ok(f) = search(&c, capped(500_000.0));
        let limit = 500_000.0 / 0.99;
        assert!(f.throughput_pps <= limit && f.throughput_pps >= limit - 100.0);
    }

    #[test]
    fn a_device_faster_than_the_generator() {
        let Ok(f) = search(&cfg(200_000.0, 1000.0), capped(1e9));
        assert_eq!(f.limited_by, "generator");
        assert_eq!(f.throughput_pps, 200_000.0);
        assert_eq!(f.steps.len(), 1);
    }

    #[test]
    fn random_loss_below_a_knee() {
        // Realistic shape: rare drops below the knee, then loss grows; a
        // threshold of 0.1 % lands just above where loss reaches 0.1 %.
        let knee = 700_000.0;
        let dev = |rate: f64| -> Result<Outcome, Infallible> {
            let loss = if rate < knee {
                0.01
            } else {
                0.01 + (rate - knee) / rate * 100.0
            };
            Ok(Outcome {
                offered_pps: rate,
                delivered_pps: rate * (1.0 - loss / 100.0),
                loss_pct: loss,
            })
        };
        let mut c = cfg(2_000_000.0, 2000.0);
        c.loss_threshold_pct = 0.1;
        let Ok(f) = search(&c, dev);
        let limit = knee / (1.0 - 0.0009);
        assert!(
            (f.throughput_pps - limit).abs() <= 2000.0,
            "{}",
            f.throughput_pps
        );
    }

    #[test]
    fn a_generator_that_falls_short_is_judged_by_what_it_offered() {
        // The generator tops out at 400 kpps; the device drops above 300 kpps.
        let dev = |rate: f64| -> Result<Outcome, Infallible> {
            let offered = rate.min(400_000.0);
            let d = offered.min(300_000.0);
            Ok(Outcome {
                offered_pps: offered,
                delivered_pps: d,
                loss_pct: (offered - d) / offered * 100.0,
            })
        };
        let Ok(f) = search(&cfg(1_000_000.0, 1000.0), dev);
        assert!(f.throughput_pps <= 300_000.0 && f.throughput_pps >= 299_000.0);
    }

    #[test]
    fn errors_stop_the_search() {
        let mut n = 0;
        let r = search(&cfg(1e6, 1.0), |_| {
            n += 1;
            if n == 3 {
                Err("interrupted")
            } else {
                Ok(Outcome {
                    offered_pps: 1e6,
                    delivered_pps: 0.0,
                    loss_pct: 100.0,
                })
            }
        });
        assert_eq!(r, Err("interrupted"));
    }
}
