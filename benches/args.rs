//! The benches' command-line options: `--name N` numbers.

/// The number after `name` in `args`, or `default`.
pub fn value(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
