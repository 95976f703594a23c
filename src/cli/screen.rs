//! Output of the interactive chat: lines printed above a prompt line that
//! shows the partial input. On a terminal each printed line first clears the
//! input line (`\r\x1b[K`), then the prompt and the input are redrawn, so
//! messages that arrive while the user types never garble the input. Text
//! from the network is cleaned of control characters before it is shown.

use std::io::Write;

use super::term;

/// Replaces control characters (escape sequences included) with `\u{FFFD}`
/// and indents continuation lines.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\n    "),
            '\t' => out.push(' '),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// The chat's screen.
pub struct Screen {
    /// A terminal: draw the prompt line; else print plain lines only.
    terminal: bool,
    prompt: String,
    input: String,
}

impl Screen {
    pub fn new(terminal: bool) -> Screen {
        Screen {
            terminal,
            prompt: String::new(),
            input: String::new(),
        }
    }

    /// Prints `text` (one or more lines) above the prompt.
    pub fn line(&mut self, text: &str) {
        let mut out = std::io::stdout().lock();
        if self.terminal {
            let text = text.replace('\n', "\r\n");
            let _ = write!(out, "\r\x1b[K{text}\r\n{}", self.prompt_line());
        } else {
            let _ = writeln!(out, "{text}");
        }
        let _ = out.flush();
    }

    /// Changes the prompt.
    pub fn set_prompt(&mut self, prompt: String) {
        if prompt != self.prompt {
            self.prompt = prompt;
            self.redraw();
        }
    }

    /// Shows the partial input.
    pub fn set_input(&mut self, input: &str) {
        input.clone_into(&mut self.input);
        self.redraw();
    }

    /// Leaves the prompt line (at exit).
    pub fn finish(&mut self) {
        if self.terminal {
            let _ = write!(std::io::stdout().lock(), "\r\x1b[K");
        }
    }

    fn redraw(&mut self) {
        if self.terminal {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r\x1b[K{}", self.prompt_line());
            let _ = out.flush();
        }
    }

    /// The prompt and as much of the end of the input as fits on one row.
    fn prompt_line(&self) -> String {
        let width = term::width(term::STDOUT).unwrap_or(80);
        fit(&self.prompt, &self.input, width)
    }
}

/// `prompt` + `input`, the input cut from the left to fit in `width - 1`
/// columns (one column per character).
pub fn fit(prompt: &str, input: &str, width: usize) -> String {
    let room = width.saturating_sub(prompt.chars().count() + 1);
    let len = input.chars().count();
    if len <= room {
        return format!("{prompt}{input}");
    }
    let tail: String = input.chars().skip(len - room + 1).collect();
    format!("{prompt}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_text_cannot_drive_the_terminal() {
        assert_eq!(clean("hi\x1b[2Jthere\r"), "hi\u{FFFD}[2Jthere\u{FFFD}");
        assert_eq!(clean("a\nb"), "a\n    b");
    }

    #[test]
    fn long_input_shows_its_end() {
        assert_eq!(fit("> ", "abc", 80), "> abc");
        assert_eq!(fit("> ", "abcdefghij", 8), "> …ghij");
        assert_eq!(fit("> ", "abcdefghij", 8).chars().count(), 7);
    }
}
