//! Time as the REST double writes it: Twilio's RFC 2822 dates on resources and callbacks, and UTC
//! instants to the microsecond on its records (so a test can measure the pace between requests).

use std::time::{SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::{Rfc2822, Rfc3339};

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

fn at(us: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `Tue, 31 Aug 2010 20:36:28 +0000`, as Twilio writes `date_created` and `Timestamp`.
pub fn rfc2822(us: i64) -> String {
    at(us - us.rem_euclid(1_000_000))
        .format(&Rfc2822)
        .unwrap_or_default()
}

/// `2010-08-31T20:36:28.123456Z`.
pub fn rfc3339(us: i64) -> String {
    at(us).format(&Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_twilio_and_as_records_do() {
        let us = 1_283_286_988_123_456;
        assert_eq!(rfc2822(us), "Tue, 31 Aug 2010 20:36:28 +0000");
        assert_eq!(rfc3339(us), "2010-08-31T20:36:28.123456Z");
        assert!(now_us() > us);
    }
}
