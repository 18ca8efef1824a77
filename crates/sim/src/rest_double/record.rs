//! Every request the double received, in arrival order: method, path, form, who authenticated and
//! what it was answered, kept in memory (`GET /_double/requests`) and, with `--record`, appended to
//! a JSONL file as it arrives. Tests read these back to prove what was sent, and how often.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Who a request authenticated as. The password is never kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthSeen {
    /// The basic-auth user: the account SID (`AC…`) or an API key SID (`SK…`).
    pub user: String,
    /// `auth_token`, `api_key`, `unverified` (the double was given no credentials to check), or
    /// `refused` (wrong password, unknown key, another account).
    pub kind: String,
}

/// What the double answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Answer {
    /// The HTTP status; `None` when the request was left hanging.
    pub status: Option<u16>,
    /// The SID of what was created (`CA…`, `SM…`) or updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Twilio's error code, for a refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u32>,
    /// How long the answer was held back (`delay:SECS`), in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delayed_ms: Option<u64>,
}

/// One request as the double stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    /// 1, 2, 3… in arrival order, never reused (not even after a clear).
    pub seq: u64,
    /// When the request's head had arrived, UTC, to the microsecond.
    pub received_at: String,
    pub received_unix_us: i64,
    pub method: String,
    pub path: String,
    /// `messages`, `calls`, `call-update`, or `None` for a path the double does not serve.
    pub endpoint: Option<String>,
    /// `None` when the request carried no basic auth.
    pub auth: Option<AuthSeen>,
    /// The form; a name sent more than once has an array of its values.
    pub form: Map<String, Value>,
    pub answer: Answer,
}

impl Recorded {
    /// The first value of a form field.
    pub fn field(&self, name: &str) -> Option<&str> {
        match self.form.get(name)? {
            Value::String(s) => Some(s),
            Value::Array(values) => values.first().and_then(Value::as_str),
            _ => None,
        }
    }

    /// Every value of a form field, in the order sent.
    pub fn fields(&self, name: &str) -> Vec<&str> {
        match self.form.get(name) {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(values)) => values.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }
}

/// The form as a JSON object, repeats kept as arrays.
pub fn form_object(pairs: &[(String, String)]) -> Map<String, Value> {
    let mut form = Map::new();
    for (name, value) in pairs {
        match form.get_mut(name) {
            None => {
                form.insert(name.clone(), Value::String(value.clone()));
            }
            Some(Value::Array(values)) => values.push(Value::String(value.clone())),
            Some(first) => {
                let first = first.take();
                form.insert(
                    name.clone(),
                    Value::Array(vec![first, Value::String(value.clone())]),
                );
            }
        }
    }
    form
}

#[derive(Default)]
struct Entries {
    list: Vec<Recorded>,
    next_seq: u64,
}

/// The record of requests.
pub struct Log {
    entries: Mutex<Entries>,
    file: Option<Mutex<File>>,
}

impl Log {
    /// A log in memory, and in `file` (created or appended to) when given.
    pub fn new(file: Option<&Path>) -> io::Result<Self> {
        let file = match file {
            Some(path) => Some(Mutex::new(
                File::options().create(true).append(true).open(path)?,
            )),
            None => None,
        };
        Ok(Self {
            entries: Mutex::new(Entries::default()),
            file,
        })
    }

    /// Stores a request (its `seq` is assigned here) and returns the seq.
    pub fn push(&self, mut entry: Recorded) -> u64 {
        let mut entries = lock(&self.entries);
        entries.next_seq += 1;
        entry.seq = entries.next_seq;
        if let Some(file) = &self.file
            && let Ok(mut line) = serde_json::to_vec(&entry)
        {
            line.push(b'\n');
            // One write per line, under the entries' lock: lines never interleave and stay in
            // seq order. A full disk loses the file's line, never the in-memory record.
            let _ = lock(file).write_all(&line);
        }
        entries.list.push(entry);
        entries.next_seq
    }

    /// Requests after `since`, to `endpoint` when given (`none` for unknown paths).
    pub fn list(&self, endpoint: Option<&str>, since: u64) -> Vec<Recorded> {
        lock(&self.entries)
            .list
            .iter()
            .filter(|r| r.seq > since)
            .filter(|r| match endpoint {
                None => true,
                Some("none") => r.endpoint.is_none(),
                Some(e) => r.endpoint.as_deref() == Some(e),
            })
            .cloned()
            .collect()
    }

    pub fn clear(&self) {
        lock(&self.entries).list.clear();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_fields_become_arrays_and_read_back() {
        let pairs: Vec<(String, String)> = [
            ("To", "+1"),
            ("StatusCallbackEvent", "initiated"),
            ("StatusCallbackEvent", "ringing"),
            ("StatusCallbackEvent", "answered"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let entry = Recorded {
            seq: 0,
            received_at: String::new(),
            received_unix_us: 0,
            method: "POST".into(),
            path: "/".into(),
            endpoint: Some("calls".into()),
            auth: None,
            form: form_object(&pairs),
            answer: Answer::default(),
        };
        assert_eq!(entry.field("To"), Some("+1"));
        assert_eq!(
            entry.fields("StatusCallbackEvent"),
            ["initiated", "ringing", "answered"]
        );
        assert_eq!(entry.field("StatusCallbackEvent"), Some("initiated"));

        let dir = tempfile_dir();
        let path = dir.join("requests.jsonl");
        let log = Log::new(Some(&path)).unwrap();
        assert_eq!(log.push(entry.clone()), 1);
        assert_eq!(log.push(entry), 2);
        assert_eq!(log.list(Some("calls"), 1).len(), 1);
        assert_eq!(log.list(Some("none"), 0).len(), 0);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Recorded> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].seq, 2);
        log.clear();
        assert!(log.list(None, 0).is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "prosaas-sim-record-{}-{}",
            std::process::id(),
            super::super::clock::now_us()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
