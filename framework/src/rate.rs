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
                "`{text}`: the count must be at least 1 (to stop a stage, scale it to 0)"
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

#[cfg(test)]
mod tests {
    use super::*;

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
