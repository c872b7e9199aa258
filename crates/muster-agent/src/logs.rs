//! Container logs in the CRI format kubelet uses (`<RFC3339Nano> <stream> <F|P> <text>`), so
//! `kubectl logs` options (`--timestamps`, `--since`, `--tail`, `--previous`, `-f`) can be
//! answered from the file.
//!
//! Layout: `<pod dir>/logs/<container>/<instance>.log`, where `instance` is the container's
//! restart count when that run started. The previous instance's file is kept for
//! `--previous`; older ones are removed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Longest piece of a line written as one record; longer lines are split into partial
/// (`P`) records, as CRI runtimes do.
const MAX_RECORD: usize = 16 * 1024;

pub fn format_record(ts: Timestamp, stream: Stream, partial: bool, text: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{} {} {} ",
        format_timestamp(ts),
        stream.as_str(),
        if partial { "P" } else { "F" }
    )
    .into_bytes();
    out.extend_from_slice(text);
    out.push(b'\n');
    out
}

/// RFC 3339 with nanoseconds, UTC, as in kubelet's log files.
pub fn format_timestamp(ts: Timestamp) -> String {
    format!("{ts:.9}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub timestamp: Timestamp,
    pub raw_timestamp: &'a str,
    pub stream: &'a str,
    pub partial: bool,
    pub text: &'a [u8],
}

/// Parses one record line (without its trailing newline).
pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let ts = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or_default();
    Some(Record {
        timestamp: ts.parse().ok()?,
        raw_timestamp: ts,
        stream,
        partial: tag == b"P",
        text,
    })
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<u64>,
    pub since: Option<Timestamp>,
    pub limit_bytes: Option<u64>,
}

/// What the user sees for the records in `content`, filtered and shaped by `opts`.
/// `tailLines` counts whole lines (a run of partial records and their final record).
pub fn render(content: &[u8], opts: &LogOptions) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    let mut current_started = false;
    for raw in content.split(|b| *b == b'\n') {
        let Some(rec) = parse_record(raw) else {
            continue;
        };
        if opts.since.is_some_and(|since| rec.timestamp < since) {
            continue;
        }
        if !current_started {
            if opts.timestamps {
                current.extend_from_slice(rec.raw_timestamp.as_bytes());
                current.push(b' ');
            }
            current_started = true;
        }
        current.extend_from_slice(rec.text);
        if !rec.partial {
            current.push(b'\n');
            lines.push(std::mem::take(&mut current));
            current_started = false;
        }
    }
    if current_started {
        lines.push(current);
    }
    let skip = match opts.tail_lines {
        Some(n) => lines.len().saturating_sub(n as usize),
        None => 0,
    };
    let mut out: Vec<u8> = lines.into_iter().skip(skip).flatten().collect();
    if let Some(limit) = opts.limit_bytes {
        out.truncate(limit as usize);
    }
    out
}

/// Renders records appended while following: same as `render` without `tailLines`.
pub fn render_more(content: &[u8], opts: &LogOptions) -> Vec<u8> {
    let follow = LogOptions {
        tail_lines: None,
        limit_bytes: None,
        ..opts.clone()
    };
    render(content, &follow)
}

pub fn container_log_dir(pod_dir: &Path, container: &str) -> PathBuf {
    pod_dir.join("logs").join(container)
}

pub fn instance_log_path(pod_dir: &Path, container: &str, instance: i32) -> PathBuf {
    container_log_dir(pod_dir, container).join(format!("{instance}.log"))
}

/// Appends a process's stdout and stderr to one log file.
#[derive(Clone)]
pub struct LogSink {
    file: Arc<tokio::sync::Mutex<tokio::fs::File>>,
}

impl LogSink {
    /// Opens the log of a new container instance, removing instances older than the previous.
    pub async fn create(
        pod_dir: &Path,
        container: &str,
        instance: i32,
    ) -> std::io::Result<LogSink> {
        let dir = container_log_dir(pod_dir, container);
        tokio::fs::create_dir_all(&dir).await?;
        if let Ok(mut entries) = tokio::fs::read_dir(&dir).await {
            while let Ok(Some(entry)) = entries.next_entry().await {
                let name = entry.file_name();
                let n = name
                    .to_str()
                    .and_then(|n| n.strip_suffix(".log"))
                    .and_then(|n| n.parse::<i32>().ok());
                if n.is_some_and(|n| n < instance - 1) {
                    let _ = tokio::fs::remove_file(entry.path()).await;
                }
            }
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(instance_log_path(pod_dir, container, instance))
            .await?;
        Ok(LogSink {
            file: Arc::new(tokio::sync::Mutex::new(file)),
        })
    }

    pub async fn write(&self, stream: Stream, partial: bool, text: &[u8]) -> std::io::Result<()> {
        let record = format_record(Timestamp::now(), stream, partial, text);
        let mut file = self.file.lock().await;
        file.write_all(&record).await?;
        // tokio's File writes in the background; readers (`kubectl logs`) must see every line
        file.flush().await
    }

    /// Copies `reader` line by line into the log until it ends.
    pub async fn copy_from(&self, stream: Stream, mut reader: impl AsyncRead + Unpin) {
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=pos).collect();
                let _ = self.write(stream, false, &line[..line.len() - 1]).await;
            }
            while pending.len() >= MAX_RECORD {
                let piece: Vec<u8> = pending.drain(..MAX_RECORD).collect();
                let _ = self.write(stream, true, &piece).await;
            }
        }
        if !pending.is_empty() {
            // output that ended without a newline
            let _ = self.write(stream, true, &pending).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn sample() -> Vec<u8> {
        let mut c = Vec::new();
        c.extend(format_record(ts(1), Stream::Stdout, false, b"one"));
        c.extend(format_record(ts(2), Stream::Stderr, false, b"two"));
        c.extend(format_record(ts(3), Stream::Stdout, true, b"thr"));
        c.extend(format_record(ts(3), Stream::Stdout, false, b"ee"));
        c.extend(format_record(
            ts(4),
            Stream::Stdout,
            true,
            b"tail-no-newline",
        ));
        c.extend(b"garbage line\n");
        c
    }

    #[test]
    fn record_round_trip() {
        let line = format_record(ts(0), Stream::Stderr, true, b"a b c");
        assert_eq!(line, b"2023-11-14T22:13:20.000000000Z stderr P a b c\n");
        let rec = parse_record(&line[..line.len() - 1]).unwrap();
        assert_eq!(
            (rec.stream, rec.partial, rec.text),
            ("stderr", true, &b"a b c"[..])
        );
        assert_eq!(rec.timestamp, ts(0));
        assert!(parse_record(b"nonsense").is_none());
        assert_eq!(
            parse_record(b"2023-11-14T22:13:20Z stdout F ")
                .unwrap()
                .text,
            b""
        );
    }

    #[test]
    fn render_table() {
        let check = |opts: LogOptions, want: &str| {
            let got = render(&sample(), &opts);
            assert_eq!(String::from_utf8(got).unwrap(), want, "{opts:?}");
        };
        check(LogOptions::default(), "one\ntwo\nthree\ntail-no-newline");
        check(
            LogOptions {
                tail_lines: Some(2),
                ..Default::default()
            },
            "three\ntail-no-newline",
        );
        check(
            LogOptions {
                tail_lines: Some(0),
                ..Default::default()
            },
            "",
        );
        check(
            LogOptions {
                since: Some(ts(2)),
                tail_lines: Some(10),
                ..Default::default()
            },
            "two\nthree\ntail-no-newline",
        );
        check(
            LogOptions {
                timestamps: true,
                tail_lines: Some(2),
                ..Default::default()
            },
            "2023-11-14T22:13:23.000000000Z three\n2023-11-14T22:13:24.000000000Z tail-no-newline",
        );
        check(
            LogOptions {
                limit_bytes: Some(6),
                ..Default::default()
            },
            "one\ntw",
        );
    }

    #[tokio::test]
    async fn sink_splits_lines_and_keeps_one_previous_instance() {
        let dir = tempfile::tempdir().unwrap();
        for instance in 0..3 {
            let sink = LogSink::create(dir.path(), "c", instance).await.unwrap();
            let input: &[u8] = b"hello\nworld\nno newline";
            sink.copy_from(Stream::Stdout, input).await;
        }
        let mut names: Vec<String> = std::fs::read_dir(container_log_dir(dir.path(), "c"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["1.log", "2.log"]);
        let content = std::fs::read(instance_log_path(dir.path(), "c", 2)).unwrap();
        assert_eq!(
            render(&content, &LogOptions::default()),
            b"hello\nworld\nno newline"
        );
    }
}
