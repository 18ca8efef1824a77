//! The log lines' timestamps: RFC 3339 in UTC to the microsecond, exactly as tracing-subscriber's
//! default `SystemTime` writes them, with the date and time of day formatted once a second.
//!
//! Why not the default: it formats all seven numbers of every line through `core::fmt`, about
//! 2,400 instructions a line; with a webhook's line that is a few percent of its CPU
//! (docs/benchmarks.md, sixth round). Here a line copies the second's text and writes six digits.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// The timer for `tracing_subscriber::fmt().with_timer(..)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogClock;

thread_local! {
    /// The second last formatted on this thread, and its `YYYY-MM-DDTHH:MM:SS.` text.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

impl FormatTime for LogClock {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let Ok(since_epoch) = SystemTime::now().duration_since(UNIX_EPOCH) else {
            // A clock before 1970: the default says how.
            return tracing_subscriber::fmt::time::SystemTime.format_time(w);
        };
        let (secs, micros) = (since_epoch.as_secs(), since_epoch.subsec_micros());
        SECOND.with(|second| {
            let mut second = second.borrow_mut();
            if second.0 != secs {
                let Some(text) = second_text(secs) else {
                    return tracing_subscriber::fmt::time::SystemTime.format_time(w);
                };
                *second = (secs, text);
            }
            w.write_str(&second.1)?;
            let micros = micros_text(micros);
            w.write_str(std::str::from_utf8(&micros).map_err(|_| fmt::Error)?)
        })
    }
}

/// `YYYY-MM-DDTHH:MM:SS.` for `secs` after the epoch, `None` past year 9999 (the default writes
/// those another way).
fn second_text(secs: u64) -> Option<String> {
    let at = time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).ok()?).ok()?;
    if at.year() > 9999 {
        return None;
    }
    let mut text = String::with_capacity(20);
    write!(
        text,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
    .ok()?;
    Some(text)
}

/// The six digits of `micros` (below 1,000,000) and the `Z`, ASCII.
fn micros_text(micros: u32) -> [u8; 7] {
    let mut digits = [b'0', b'0', b'0', b'0', b'0', b'0', b'Z'];
    let mut rest = micros;
    for digit in digits[..6].iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    digits
}

#[cfg(test)]
mod tests {
    use super::*;

    fn formatted(timer: &impl FormatTime) -> String {
        let mut text = String::new();
        timer.format_time(&mut Writer::new(&mut text)).unwrap();
        text
    }

    #[test]
    fn seconds_are_written_as_rfc_3339() {
        assert_eq!(second_text(0).unwrap(), "1970-01-01T00:00:00.");
        assert_eq!(second_text(951_782_400).unwrap(), "2000-02-29T00:00:00.");
        assert_eq!(second_text(1_796_601_599).unwrap(), "2026-12-06T23:59:59.");
        assert_eq!(
            second_text(253_402_300_799).unwrap(),
            "9999-12-31T23:59:59."
        );
        assert_eq!(second_text(253_402_300_800), None);
    }

    #[test]
    fn micros_are_six_digits_then_z() {
        assert_eq!(&micros_text(0), b"000000Z");
        assert_eq!(&micros_text(7), b"000007Z");
        assert_eq!(&micros_text(999_999), b"999999Z");
    }

    #[test]
    fn a_line_reads_as_the_default_timer_writes_it() {
        // The two clocks are read one after the other: they agree to the second unless a second
        // turned between them, which a second try avoids.
        for _ in 0..3 {
            let before = formatted(&tracing_subscriber::fmt::time::SystemTime);
            let ours = formatted(&LogClock);
            let after = formatted(&tracing_subscriber::fmt::time::SystemTime);
            assert_eq!(ours.len(), before.len(), "{ours} against {before}");
            assert!(ours.ends_with('Z'));
            if before[..20] == after[..20] {
                assert_eq!(ours[..20], before[..20]);
                assert!(before[20..] <= ours[20..] && ours[20..] <= after[20..]);
                return;
            }
        }
        panic!("the seconds kept turning");
    }
}
