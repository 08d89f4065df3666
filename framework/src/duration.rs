//! Durations as written in pipeline files: `250ms`, `5s`, `2m`, `1h`.

use std::time::Duration;

/// Parses a duration written as a number and a unit (`ms`, `s`, `m`, `h`),
/// or several such parts (`1m30s`). Zero is allowed; callers decide.
pub fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty duration; write it like `250ms`, `5s`, `2m` or `1h`".into());
    }
    if trimmed.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "`{trimmed}` has no unit; write it like `{trimmed}s` or `{trimmed}ms`"
        ));
    }
    humantime::parse_duration(trimmed).map_err(|error| {
        format!(
            "`{trimmed}` is not a duration ({error}); write it like `250ms`, `5s`, `2m` or `1h`"
        )
    })
}

/// Formats a duration in the shortest exact form of the pipeline-file syntax
/// (`250ms`, `10s`, `1m`, `90s`, `2h`). Used in broker object names, so it
/// never contains spaces.
pub fn format(duration: Duration) -> String {
    let ms = duration.as_millis();
    const HOUR: u128 = 3_600_000;
    const MINUTE: u128 = 60_000;
    const SECOND: u128 = 1_000;
    if ms == 0 {
        "0s".into()
    } else if ms.is_multiple_of(HOUR) {
        format!("{}h", ms / HOUR)
    } else if ms.is_multiple_of(MINUTE) {
        format!("{}m", ms / MINUTE)
    } else if ms.is_multiple_of(SECOND) {
        format!("{}s", ms / SECOND)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_units() {
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
    }

    #[test]
    fn rejects_missing_units_and_garbage() {
        assert!(parse("30").unwrap_err().contains("no unit"));
        assert!(parse("").is_err());
        assert!(parse("fast").unwrap_err().contains("not a duration"));
        assert!(parse("-5s").is_err());
    }

    #[test]
    fn formats_shortest_exact_form() {
        assert_eq!(format(Duration::from_millis(250)), "250ms");
        assert_eq!(format(Duration::from_secs(10)), "10s");
        assert_eq!(format(Duration::from_secs(60)), "1m");
        assert_eq!(format(Duration::from_secs(90)), "90s");
        assert_eq!(format(Duration::from_secs(7200)), "2h");
        assert_eq!(format(Duration::from_millis(1500)), "1500ms");
    }
}
