//! Cron schedules (croner): campaigns with a `schedule`, and BackupOps' scheduled backups.
//!
//! Expressions have 5 fields (minute hour day-of-month month day-of-week) or 6 with
//! seconds first; they are evaluated in UTC. A run that is still going when its next tick
//! comes delays that tick: ticks are never run concurrently, and missed ticks are not
//! made up (the next one after the run ends is taken), as cron's own `@reboot`-less
//! behaviour and Kubernetes CronJobs' `concurrencyPolicy: Forbid` do.

use chrono::{DateTime, Utc};
use croner::Cron;

/// Parses a cron expression; the error says what is wrong.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    Cron::new(expr)
        .with_seconds_optional()
        .parse()
        .map_err(|e| format!("{expr:?} is not a cron expression: {e}"))
}

/// The first tick strictly after `after`.
pub fn next_after(cron: &Cron, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&after, false).ok()
}

/// Sleeps until the next tick after now; returns its time.
pub async fn sleep_until_next(cron: &Cron) -> Option<DateTime<Utc>> {
    let next = next_after(cron, Utc::now())?;
    let wait = (next - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn five_and_six_field_expressions_parse_and_tick() {
        let c = parse_cron("0 3 * * *").unwrap();
        let t = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap();
        assert_eq!(
            next_after(&c, t),
            Some(Utc.with_ymd_and_hms(2025, 1, 2, 3, 0, 0).unwrap())
        );
        let c = parse_cron("*/10 * * * * *").unwrap();
        assert_eq!(
            next_after(&c, t),
            Some(Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 10).unwrap())
        );
        assert!(parse_cron("every day").unwrap_err().contains("every day"));
        assert!(parse_cron("61 * * * *").is_err());
    }
}
