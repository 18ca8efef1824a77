//! A value that must never be printed: `Debug` and `Display` show `[redacted]`, whatever it holds.
//! Credentials travel in it from the environment to the one place that uses them (`expose`).

use std::fmt;

/// Holds a credential; formatting it in a log line, an error or a `Debug` dump shows `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The value itself, for the one call that needs it (a connection, an HMAC). Never log it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `scheme://user:password@host…` with the user information replaced by `***`, for naming a
/// bad URL in an error. Everything up to the last `@` goes, since a password may hold `/` or `@`.
pub fn redact_userinfo(url: &str) -> String {
    let Some(at) = url.rfind('@') else {
        return url.to_owned();
    };
    match url.find("://") {
        Some(start) if start < at => format!("{}***{}", &url[..start + 3], &url[at..]),
        _ => format!("***{}", &url[at..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_never_shows_the_value() {
        let secret = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{secret}"), "[redacted]");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert!(!format!("{:?}", Some(&secret)).contains("hunter2"));
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn userinfo_is_redacted_however_it_is_spelled() {
        for (url, shown) in [
            ("redis://:hunter2@h:6379/0", "redis://***@h:6379/0"),
            ("redis://u:hun/ter@2@h:x", "redis://***@h:x"),
            ("rediss+sentinel://u:p@a,b/m", "rediss+sentinel://***@a,b/m"),
            (":hunter2@h", "***@h"),
            ("redis://h:6379/0", "redis://h:6379/0"),
        ] {
            assert_eq!(redact_userinfo(url), shown, "{url}");
        }
    }
}
