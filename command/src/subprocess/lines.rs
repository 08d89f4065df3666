//! A child's output, line by line, as bytes: a line is at most a given
//! length (a longer one is cut), and bytes that are not UTF-8 never stop
//! the reading (a reader that stopped would leave the child blocked on a
//! full pipe).

use std::io;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// What [`read_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line, without its newline (or the last bytes before the end).
    Whole,
    /// The first `max` bytes of a longer line; the rest is still to read.
    TooLong,
    /// The end of the output.
    End,
}

/// Reads one line (without its newline) of at most `max` bytes into
/// `line`. A longer line gives its first `max` bytes as [`Line::TooLong`],
/// and reading on gives the rest.
pub async fn read_line(
    reader: &mut (impl AsyncBufReadExt + Unpin),
    line: &mut Vec<u8>,
    max: usize,
) -> io::Result<Line> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if line.is_empty() {
                Line::End
            } else {
                Line::Whole
            });
        }
        let (content, found) = match available.iter().position(|b| *b == b'\n') {
            Some(at) => (at, true),
            None => (available.len(), false),
        };
        let room = max.saturating_sub(line.len());
        if content > room {
            line.extend_from_slice(&available[..room]);
            reader.consume(room);
            return Ok(Line::TooLong);
        }
        line.extend_from_slice(&available[..content]);
        reader.consume(content + usize::from(found));
        if found {
            return Ok(Line::Whole);
        }
    }
}

/// Reads `output` to its end and hands each line to `each` as text (bytes
/// that are not UTF-8 become U+FFFD; a line over `max` bytes comes in
/// pieces; a trailing `\r` is dropped). Only the end of the output or an
/// error reading it stops it.
pub async fn relay(output: impl AsyncRead + Unpin, max: usize, mut each: impl FnMut(&str)) {
    let mut reader = BufReader::new(output);
    let mut line = Vec::new();
    loop {
        line.clear();
        match read_line(&mut reader, &mut line, max).await {
            Ok(Line::End) | Err(_) => return,
            Ok(Line::Whole | Line::TooLong) => {}
        }
        let bytes = line.strip_suffix(b"\r").unwrap_or(&line);
        each(&String::from_utf8_lossy(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<(String, Line)> {
        let mut reader = BufReader::with_capacity(16, input);
        let mut out = Vec::new();
        loop {
            let mut line = Vec::new();
            let kind = read_line(&mut reader, &mut line, max).await.unwrap();
            if kind == Line::End {
                return out;
            }
            out.push((String::from_utf8_lossy(&line).into_owned(), kind));
        }
    }

    #[tokio::test]
    async fn lines_are_read_whole_across_buffers_and_a_long_one_comes_in_pieces() {
        assert_eq!(
            lines(b"{\"id\":\"a\",\"done\":true}\nlast", 64).await,
            vec![
                ("{\"id\":\"a\",\"done\":true}".to_string(), Line::Whole),
                ("last".to_string(), Line::Whole)
            ]
        );
        // 40 bytes and its newline fit a limit of 40; 41 do not: the first
        // 40 come as too long, then the rest.
        let exact = format!("{}\n", "x".repeat(40));
        assert_eq!(lines(exact.as_bytes(), 40).await[0].1, Line::Whole);
        let long = format!("{}\nnext\n", "x".repeat(41));
        assert_eq!(
            lines(long.as_bytes(), 40).await,
            vec![
                ("x".repeat(40), Line::TooLong),
                ("x".to_string(), Line::Whole),
                ("next".to_string(), Line::Whole)
            ]
        );
        // A buffer larger than the limit still makes progress.
        let mut reader = BufReader::with_capacity(1024, &[b'y'; 100][..]);
        let mut line = Vec::new();
        assert_eq!(
            read_line(&mut reader, &mut line, 10).await.unwrap(),
            Line::TooLong
        );
        assert_eq!(line.len(), 10);
    }

    #[tokio::test]
    async fn bytes_that_are_not_utf8_do_not_stop_the_relay() {
        let mut seen = Vec::new();
        relay(&b"before\n\xff\xfe bad\r\nafter\n"[..], 64, |line| {
            seen.push(line.to_string());
        })
        .await;
        assert_eq!(seen, ["before", "\u{fffd}\u{fffd} bad", "after"]);
    }
}
