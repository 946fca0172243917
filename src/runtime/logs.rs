//! Container logs as the runtime gives them, made into lines: what to ask
//! for (`LogOptions`), what comes back (`LogChunk`, one line each), and the
//! splitter that turns the runtime's frames into lines.

use std::collections::VecDeque;

/// Which of the container's outputs a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// One line of a container's output, without its newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub stream: LogStream,
    pub line: String,
    /// When the runtime received it, Unix milliseconds, when it says.
    pub ts_ms: Option<i64>,
}

/// Which lines to return.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// After the lines there are, keep streaming new ones until the
    /// container stops or the stream is dropped.
    pub follow: bool,
    /// Only lines received at or after this time (Unix milliseconds).
    pub since_ms: Option<i64>,
    /// Only the last N lines (before following).
    pub tail: Option<u32>,
}

/// A line longer than this is cut into pieces of this size, so one endless
/// line cannot grow the agent's memory.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Turns the runtime's frames into lines. Each frame starts with the
/// runtime's timestamp (logs are always asked for with timestamps); a frame
/// may end in the middle of a line (the runtime's partial entries), which the
/// next frame of the same stream completes. stdout and stderr are kept apart.
#[derive(Default)]
pub struct LineSplitter {
    pending: [Pending; 2],
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    ts_ms: Option<i64>,
}

impl LineSplitter {
    /// Adds one frame; complete lines go to `out`.
    pub fn push(&mut self, stream: LogStream, frame: &[u8], out: &mut VecDeque<LogChunk>) {
        let (ts_ms, mut rest) = split_timestamp(frame);
        let pending = &mut self.pending[stream as usize];
        if pending.bytes.is_empty() {
            pending.ts_ms = ts_ms;
        }
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    pending.bytes.extend_from_slice(&rest[..end]);
                    rest = &rest[end + 1..];
                    out.push_back(take_line(stream, pending));
                    pending.ts_ms = ts_ms;
                }
                None => {
                    pending.bytes.extend_from_slice(rest);
                    rest = &[];
                }
            }
            while pending.bytes.len() > MAX_LINE_BYTES {
                let tail = pending.bytes.split_off(MAX_LINE_BYTES);
                out.push_back(take_line(stream, pending));
                pending.bytes = tail;
                pending.ts_ms = ts_ms;
            }
        }
    }

    /// The stream ended: what is left of a last line without newline.
    pub fn finish(&mut self, out: &mut VecDeque<LogChunk>) {
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            let pending = &mut self.pending[stream as usize];
            if !pending.bytes.is_empty() {
                out.push_back(take_line(stream, pending));
            }
        }
    }
}

fn take_line(stream: LogStream, pending: &mut Pending) -> LogChunk {
    let bytes = std::mem::take(&mut pending.bytes);
    let mut line = String::from_utf8_lossy(&bytes).into_owned();
    if line.ends_with('\r') {
        line.pop();
    }
    LogChunk {
        stream,
        line,
        ts_ms: pending.ts_ms.take(),
    }
}

/// The runtime's timestamp at the start of a frame ("2024-05-01T10:00:00.123Z
/// text"), and the rest. A frame that does not start with one is all text.
fn split_timestamp(frame: &[u8]) -> (Option<i64>, &[u8]) {
    let Some(space) = frame.iter().take(64).position(|&b| b == b' ') else {
        return (None, frame);
    };
    match std::str::from_utf8(&frame[..space])
        .ok()
        .and_then(parse_rfc3339_ms)
    {
        Some(ms) => (Some(ms), &frame[space + 1..]),
        None => (None, frame),
    }
}

/// An RFC 3339 time as Unix milliseconds. Docker writes UTC with
/// nanoseconds; podman whole seconds, in UTC or with the node's offset.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(frames: &[(LogStream, &str)]) -> Vec<(LogStream, String, Option<i64>)> {
        let mut splitter = LineSplitter::default();
        let mut out = VecDeque::new();
        for (stream, frame) in frames {
            splitter.push(*stream, frame.as_bytes(), &mut out);
        }
        splitter.finish(&mut out);
        out.into_iter()
            .map(|c| (c.stream, c.line, c.ts_ms))
            .collect()
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2026-11-26T02:01:52Z"),
            Some(1_795_658_512_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-26T02:01:52.123456789Z"),
            Some(1_795_658_512_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-26T03:01:52.5+01:00"),
            Some(1_795_658_512_500)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-25T21:01:52-05:00"),
            Some(1_795_658_512_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T00:00:00Z"),
            Some(951_782_400_000)
        );
        for bad in [
            "",
            "hello",
            "2026-11-26",
            "2026-11-26T02:01:52",
            "2026-13-26T02:01:52Z",
            "2026-11-26T02:01:52.Z",
            "2026-11-26T02:01:52+0100",
            "20x6-11-26T02:01:52Z",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn frames_become_lines() {
        use LogStream::*;
        let got = lines(&[
            (Stdout, "1970-01-01T00:00:01Z line 1\n"),
            (Stderr, "1970-01-01T00:00:02Z err 1\n"),
            // A partial entry, completed by the next frame of its stream.
            (Stdout, "1970-01-01T00:00:03Z partial"),
            (Stderr, "1970-01-01T00:00:04Z err 2\r\n"),
            (Stdout, "1970-01-01T00:00:05Z  done\n"),
            (Stdout, "1970-01-01T00:00:06Z two\nlines\n"),
            (Stdout, "no timestamp\n"),
            (Stdout, "1970-01-01T00:00:07Z unfinished"),
        ]);
        assert_eq!(
            got,
            vec![
                (Stdout, "line 1".to_string(), Some(1000)),
                (Stderr, "err 1".to_string(), Some(2000)),
                (Stderr, "err 2".to_string(), Some(4000)),
                (Stdout, "partial done".to_string(), Some(3000)),
                (Stdout, "two".to_string(), Some(6000)),
                (Stdout, "lines".to_string(), Some(6000)),
                (Stdout, "no timestamp".to_string(), None),
                (Stdout, "unfinished".to_string(), Some(7000)),
            ]
        );
    }

    #[test]
    fn endless_lines_are_cut() {
        let long = "x".repeat(MAX_LINE_BYTES * 2 + 10);
        let got = lines(&[(LogStream::Stdout, &long)]);
        let sizes: Vec<usize> = got.iter().map(|(_, l, _)| l.len()).collect();
        assert_eq!(sizes, vec![MAX_LINE_BYTES, MAX_LINE_BYTES, 10]);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let mut splitter = LineSplitter::default();
        let mut out = VecDeque::new();
        splitter.push(LogStream::Stdout, b"caf\xff\n", &mut out);
        assert_eq!(out[0].line, "caf\u{fffd}");
    }
}
