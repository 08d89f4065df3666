//! A child's output, line by line, as bytes (tokio_util's
//! `AnyDelimiterCodec`): a line is at most a given length, and bytes that
//! are not UTF-8 never stop the reading (a reader that stopped would leave
//! the child blocked on a full pipe).

use futures_util::StreamExt;
use tokio::io::AsyncRead;
use tokio_util::{
    bytes::Bytes,
    codec::{AnyDelimiterCodec, AnyDelimiterCodecError, FramedRead},
};

/// What [`Lines::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line, without its newline (or the last bytes before the end).
    Whole(Bytes),
    /// A line longer than the limit, skipped up to its newline.
    TooLong,
    /// The end of the output, or an error reading it.
    End,
}

/// The lines of one output.
pub struct Lines<R> {
    frames: FramedRead<R, AnyDelimiterCodec>,
    /// A too-long line was just reported: the stream's pause after it (a
    /// `None`) is not the end.
    skipping: bool,
}

impl<R: AsyncRead + Unpin> Lines<R> {
    /// Lines of `output` of at most `max` bytes each.
    pub fn new(output: R, max: usize) -> Lines<R> {
        let codec = AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), max);
        Lines {
            frames: FramedRead::with_capacity(output, codec, 64 * 1024),
            skipping: false,
        }
    }

    /// The next line.
    pub async fn next(&mut self) -> Line {
        loop {
            match self.frames.next().await {
                Some(Ok(line)) => {
                    self.skipping = false;
                    return Line::Whole(line);
                }
                Some(Err(AnyDelimiterCodecError::MaxChunkLengthExceeded)) => {
                    // The stream pauses once after an error (a `None`); the
                    // codec then skips the rest of the line and reading
                    // goes on (lines that had already arrived behind it are
                    // decoded once more bytes come, or the end).
                    self.skipping = true;
                    return Line::TooLong;
                }
                None if self.skipping => self.skipping = false,
                Some(Err(AnyDelimiterCodecError::Io(_))) | None => return Line::End,
            }
        }
    }
}

/// Reads `output` to its end and hands each line to `each` as text (bytes
/// that are not UTF-8 become U+FFFD; a trailing `\r` is dropped; a line
/// over `max` bytes is replaced by a note saying so). Only the end of the
/// output or an error reading it stops it.
pub async fn relay(output: impl AsyncRead + Unpin, max: usize, mut each: impl FnMut(&str)) {
    let mut lines = Lines::new(output, max);
    loop {
        match lines.next().await {
            Line::End => return,
            Line::TooLong => each(&format!("(a line of more than {max} bytes, not shown)")),
            Line::Whole(line) => {
                let bytes = line.strip_suffix(b"\r").unwrap_or(&line);
                each(&String::from_utf8_lossy(bytes));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &'static [u8], max: usize) -> Vec<Line> {
        let mut lines = Lines::new(input, max);
        let mut out = Vec::new();
        loop {
            match lines.next().await {
                Line::End => return out,
                line => out.push(line),
            }
        }
    }

    fn whole(text: &str) -> Line {
        Line::Whole(Bytes::copy_from_slice(text.as_bytes()))
    }

    #[tokio::test]
    async fn lines_are_read_whole_and_a_long_one_is_skipped_to_its_end() {
        assert_eq!(
            lines(b"{\"id\":\"a\",\"done\":true}\nlast", 64).await,
            vec![whole("{\"id\":\"a\",\"done\":true}"), whole("last")]
        );
        // 40 bytes fit a limit of 40; 41 do not, and the next line is read.
        let exact = format!("{}\n", "x".repeat(40)).leak();
        assert_eq!(
            lines(exact.as_bytes(), 40).await,
            vec![whole(&"x".repeat(40))]
        );
        let long = format!("{}\nnext\n", "x".repeat(41)).leak();
        assert_eq!(
            lines(long.as_bytes(), 40).await,
            vec![Line::TooLong, whole("next")]
        );
        // Longer than any buffer: skipped all the same.
        let huge = format!("{}\nafter\n", "y".repeat(300_000)).leak();
        assert_eq!(
            lines(huge.as_bytes(), 1000).await,
            vec![Line::TooLong, whole("after")]
        );
    }

    #[tokio::test]
    async fn bytes_that_are_not_utf8_and_long_lines_do_not_stop_the_relay() {
        let mut seen = Vec::new();
        let input = format!("before\n\u{0}{}\nafter\n", "z".repeat(100)).leak();
        relay(input.as_bytes(), 64, |line| seen.push(line.to_string())).await;
        assert_eq!(
            seen,
            [
                "before",
                "(a line of more than 64 bytes, not shown)",
                "after"
            ]
        );
        let mut seen = Vec::new();
        relay(&b"before\n\xff\xfe bad\r\nafter\n"[..], 64, |line| {
            seen.push(line.to_string());
        })
        .await;
        assert_eq!(seen, ["before", "\u{fffd}\u{fffd} bad", "after"]);
    }
}
