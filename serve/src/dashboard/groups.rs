//! Dead letters grouped by cause (pure): a reason with what varies in it
//! masked (numbers, long hex ids), so that 10,000 "HTTP 404 for
//! /company/123" are one group.

use std::collections::BTreeMap;

use warren::dead_letters::DeadLetter;

/// `reason` with every run of hex digits that holds a digit as `#`: plain
/// numbers, hashes, UUIDs' parts, `db7`'s number. Words stay.
pub fn mask(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.chars().any(|c| c.is_ascii_digit()) {
            out.push('#');
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in reason.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// One group: the masked reason and its letters (positions in the list),
/// newest first.
#[derive(Debug, PartialEq, Eq)]
pub struct Group {
    /// The masked reason.
    pub cause: String,
    /// Positions in the listed letters, newest (last in the queue) first.
    pub letters: Vec<usize>,
}

/// The letters (in queue order, oldest first) grouped by cause, the
/// biggest group first.
pub fn group(letters: &[DeadLetter]) -> Vec<Group> {
    let mut by_cause: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, letter) in letters.iter().enumerate().rev() {
        by_cause.entry(mask(&letter.reason)).or_default().push(i);
    }
    let mut groups: Vec<Group> = by_cause
        .into_iter()
        .map(|(cause, letters)| Group { cause, letters })
        .collect();
    groups.sort_by(|a, b| {
        b.letters
            .len()
            .cmp(&a.letters.len())
            .then(a.cause.cmp(&b.cause))
    });
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_varies_is_masked() {
        assert_eq!(mask("HTTP 404 for /company/123"), "HTTP # for /company/#");
        assert_eq!(mask("HTTP 404 for /company/98765"), "HTTP # for /company/#");
        assert_eq!(
            mask("no row 5f3a9c2e-1b2d-4c3e-9f00-aa11bb22cc33 in db7"),
            "no row #-#-#-#-# in #"
        );
        assert_eq!(mask("deadline exceeded"), "deadline exceeded");
        assert_eq!(mask("cafe 0xdeadbeef12"), "cafe #x#");
        assert_eq!(mask(""), "");
    }

    fn letter(reason: &str) -> DeadLetter {
        DeadLetter {
            id: String::new(),
            attempts: 1,
            reason: reason.into(),
            body: Vec::new(),
            body_len: 0,
            headers: Vec::new(),
        }
    }

    #[test]
    fn letters_group_by_cause_biggest_first_newest_first() {
        let letters = [
            letter("HTTP 404 for /company/1"),
            letter("timeout"),
            letter("HTTP 404 for /company/2"),
            letter("HTTP 404 for /company/3"),
        ];
        let groups = group(&letters);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].cause, "HTTP # for /company/#");
        assert_eq!(groups[0].letters, [3, 2, 0]);
        assert_eq!(groups[1].letters, [1]);
    }
}
