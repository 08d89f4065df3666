//! Rate limits as written in pipeline files: `20/s`, `600/m`, `1000/h`.

use std::time::Duration;

/// At most `count` messages per `per`, shared by all workers of a stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Messages per period.
    pub count: u32,
    /// The period.
    pub per: Duration,
}

impl RateLimit {
    /// Parses `N/s`, `N/m` or `N/h` with N a whole number of at least 1.
    pub fn parse(text: &str) -> Result<RateLimit, String> {
        let hint = "write it like `20/s`, `600/m` or `1000/h`";
        let (count, unit) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a rate limit; {hint}"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("`{text}`: `{count}` is not a whole number; {hint}"))?;
        if count == 0 {
            return Err(format!(
                "`{text}`: the count must be at least 1 (to hold a stage's messages, run no workers for it: leave it out of `warren supervise --stages`)"
            ));
        }
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            other => return Err(format!("`{text}`: unknown unit `{other}`; {hint}")),
        };
        Ok(RateLimit { count, per })
    }

    /// Messages per second.
    pub fn per_second(&self) -> f64 {
        f64::from(self.count) / self.per.as_secs_f64()
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// Spaces the starts of a stage's handlers so this worker stays within its
/// share of the stage's rate limit. The share (1 when alone) is set by the
/// supervisor (the limit divided among the stage's consumers on all boxes)
/// or, without one, by the worker from its queue's consumer count
/// (`worker/lone.rs`).
#[derive(Debug)]
pub(crate) struct Limiter {
    limit: RateLimit,
    state: std::sync::Mutex<(std::time::Instant, f64)>,
}

impl Limiter {
    pub fn new(limit: RateLimit) -> Limiter {
        Limiter {
            limit,
            state: std::sync::Mutex::new((std::time::Instant::now(), 1.0)),
        }
    }

    /// Sets this worker's share of the limit (0 < share <= 1).
    pub fn set_share(&self, share: f64) {
        if share.is_finite() && share > 0.0 {
            self.state.lock().expect("limiter").1 = share.min(1.0);
        }
    }

    /// Waits for this worker's next turn.
    pub async fn acquire(&self) {
        let at = {
            let mut state = self.state.lock().expect("limiter");
            let (at, next) = next_start(state.0, std::time::Instant::now(), self.limit, state.1);
            state.0 = next;
            at
        };
        tokio::time::sleep_until(at.into()).await;
    }
}

/// When the next call may start (`at`), and when the one after it may
/// (`next`), given the earliest allowed start `next_free` and the time now.
/// Calls are spaced evenly: `per / (count * share)` apart; an idle worker
/// does not save up a burst.
pub(crate) fn next_start(
    next_free: std::time::Instant,
    now: std::time::Instant,
    limit: RateLimit,
    share: f64,
) -> (std::time::Instant, std::time::Instant) {
    let gap = Duration::from_secs_f64(1.0 / (limit.per_second() * share));
    let at = next_free.max(now);
    (at, at + gap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_are_spaced_by_the_share_of_the_limit() {
        let start = std::time::Instant::now();
        let limit = RateLimit::parse("20/s").unwrap();
        let mut next = start;
        let mut starts = Vec::new();
        for _ in 0..5 {
            let (at, after) = next_start(next, start, limit, 1.0);
            starts.push((at - start).as_millis());
            next = after;
        }
        assert_eq!(starts, vec![0, 50, 100, 150, 200]);
        // A quarter of the limit: four times the gap.
        let (_, after) = next_start(start, start, limit, 0.25);
        assert_eq!((after - start).as_millis(), 200);
        // After a long idle time it does not burst.
        let later = start + Duration::from_secs(10);
        let (at, after) = next_start(next, later, limit, 1.0);
        assert_eq!((at, (after - at).as_millis()), (later, 50));
    }

    #[test]
    fn parses_the_three_units() {
        assert_eq!(
            RateLimit::parse("20/s").unwrap(),
            RateLimit {
                count: 20,
                per: Duration::from_secs(1)
            }
        );
        assert_eq!(RateLimit::parse("600/m").unwrap().per_second(), 10.0);
        assert_eq!(RateLimit::parse(" 1000 / h ").unwrap().count, 1000);
        assert_eq!(RateLimit::parse("5/m").unwrap().to_string(), "5/m");
    }

    #[test]
    fn rejects_bad_forms() {
        assert!(
            RateLimit::parse("20")
                .unwrap_err()
                .contains("not a rate limit")
        );
        assert!(RateLimit::parse("0/s").unwrap_err().contains("at least 1"));
        assert!(
            RateLimit::parse("x/s")
                .unwrap_err()
                .contains("whole number")
        );
        assert!(RateLimit::parse("-1/s").is_err());
        assert!(
            RateLimit::parse("20/d")
                .unwrap_err()
                .contains("unknown unit")
        );
    }
}
