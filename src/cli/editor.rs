//! A minimal line editor for the chat prompt, fed one byte at a time from
//! a terminal in non-canonical mode (or from a pipe): UTF-8 input, Backspace,
//! Ctrl-U (clear), Enter (submit), Ctrl-C / Ctrl-D on an empty line (quit).
//! Escape sequences (arrow keys and the like) are swallowed.

/// What a byte did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Nothing visible (an incomplete character or sequence, an ignored key).
    Nothing,
    /// The line changed.
    Changed,
    /// Enter: the line, now cleared.
    Submit(String),
    /// Quit.
    Quit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC.
    Started,
    /// In `ESC [` or `ESC O`, until the final byte.
    Sequence,
}

/// The line being typed.
#[derive(Debug)]
pub struct LineEditor {
    line: String,
    pending: Vec<u8>,
    escape: Escape,
    after_cr: bool,
}

const CTRL_C: u8 = 0x03;
const CTRL_D: u8 = 0x04;
const BACKSPACE: u8 = 0x08;
const CTRL_U: u8 = 0x15;
const ESC: u8 = 0x1b;
const DEL: u8 = 0x7f;

impl Default for LineEditor {
    fn default() -> Self {
        Self::new()
    }
}

impl LineEditor {
    pub fn new() -> LineEditor {
        LineEditor {
            line: String::new(),
            pending: Vec::new(),
            escape: Escape::None,
            after_cr: false,
        }
    }

    /// The line so far.
    pub fn line(&self) -> &str {
        &self.line
    }

    /// Feeds one input byte.
    pub fn feed(&mut self, byte: u8) -> Edit {
        let after_cr = std::mem::replace(&mut self.after_cr, byte == b'\r');
        if self.escape != Escape::None {
            return self.escape_byte(byte);
        }
        match byte {
            b'\n' if after_cr => Edit::Nothing,
            b'\r' | b'\n' => Edit::Submit(std::mem::take(&mut self.line)),
            CTRL_C => Edit::Quit,
            CTRL_D if self.line.is_empty() => Edit::Quit,
            BACKSPACE | DEL => changed(self.line.pop().is_some()),
            CTRL_U => changed(!std::mem::take(&mut self.line).is_empty()),
            ESC => {
                self.escape = Escape::Started;
                Edit::Nothing
            }
            b'\t' => self.insert(" "),
            0..=0x1f => Edit::Nothing,
            _ => self.utf8_byte(byte),
        }
    }

    fn insert(&mut self, text: &str) -> Edit {
        self.line.push_str(text);
        Edit::Changed
    }

    fn escape_byte(&mut self, byte: u8) -> Edit {
        self.escape = match (self.escape, byte) {
            (Escape::Started, b'[' | b'O') => Escape::Sequence,
            (Escape::Sequence, 0x20..=0x3f) => Escape::Sequence,
            _ => Escape::None,
        };
        Edit::Nothing
    }

    fn utf8_byte(&mut self, byte: u8) -> Edit {
        self.pending.push(byte);
        match std::str::from_utf8(&self.pending) {
            Ok(text) => {
                let text = text.to_string();
                self.pending.clear();
                self.insert(&text)
            }
            Err(e) if e.error_len().is_some() || self.pending.len() >= 4 => {
                self.pending.clear();
                Edit::Nothing
            }
            Err(_) => Edit::Nothing,
        }
    }
}

fn changed(did: bool) -> Edit {
    if did {
        Edit::Changed
    } else {
        Edit::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(ed: &mut LineEditor, bytes: &[u8]) -> Vec<Edit> {
        bytes.iter().map(|b| ed.feed(*b)).collect()
    }

    #[test]
    fn typing_editing_and_submitting() {
        let mut ed = LineEditor::new();
        feed_all(&mut ed, "olá x".as_bytes());
        assert_eq!(ed.line(), "olá x");
        assert_eq!(ed.feed(DEL), Edit::Changed);
        assert_eq!(ed.feed(BACKSPACE), Edit::Changed);
        assert_eq!(ed.line(), "olá");
        // An arrow key is swallowed.
        feed_all(&mut ed, b"\x1b[D\x1bOA");
        assert_eq!(ed.line(), "olá");
        assert_eq!(ed.feed(b'\r'), Edit::Submit("olá".into()));
        assert_eq!(ed.feed(b'\n'), Edit::Nothing, "CR LF is one Enter");
        assert_eq!(ed.feed(b'\n'), Edit::Submit(String::new()));
        feed_all(&mut ed, b"abc");
        assert_eq!(ed.feed(CTRL_U), Edit::Changed);
        assert_eq!(ed.line(), "");
        assert_eq!(ed.feed(DEL), Edit::Nothing);
    }

    #[test]
    fn quitting_and_bad_bytes() {
        let mut ed = LineEditor::new();
        assert_eq!(ed.feed(CTRL_D), Edit::Quit);
        ed.feed(b'a');
        assert_eq!(ed.feed(CTRL_D), Edit::Nothing);
        assert_eq!(ed.feed(CTRL_C), Edit::Quit);
        feed_all(&mut ed, &[0xff, b'b', 0x07]);
        assert_eq!(ed.line(), "ab");
    }
}
