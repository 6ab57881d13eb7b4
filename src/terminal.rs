//! Text for a terminal: names and messages from manifests or the cluster are shown with their control
//! characters escaped, so an object named with `ESC [2J` cannot clear or rewrite the reader's screen.
//! JSON and HTML outputs are escaped by their own encoders and do not use this.
//!
//! Imports: nothing of the crate.

use std::borrow::Cow;

/// `s` with every control character (C0 with ESC, tab and newline, DEL, C1) and every bidirectional
/// formatting character (which reorders what a terminal shows) written as an escape: `\x1b`,
/// `\u{9b}`, `\u{202e}`. Everything else is unchanged, and so is `s` when it has none.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !needs_escape(c) {
            out.push(c);
        } else if c.is_ascii() {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c0_del_c1_and_bidi_controls_are_escaped() {
        assert_eq!(escape_controls("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(escape_controls("\t\n\x7f"), "\\x09\\x0a\\x7f");
        assert_eq!(escape_controls("\u{9b}31m"), "\\u{9b}31m");
        assert_eq!(escape_controls("x\u{202e}y"), "x\\u{202e}y");
    }

    #[test]
    fn ordinary_text_is_borrowed_unchanged() {
        let s = "ml-inference/vllm: nvidia.com/gpu 1 -> nvidia.com/mig-1g.10gb — ü";
        assert!(matches!(escape_controls(s), Cow::Borrowed(t) if t == s));
    }
}
