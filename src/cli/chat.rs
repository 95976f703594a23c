//! The interactive chat: keys are read one at a time (non-canonical mode on
//! a terminal) and network events are handled in the same loop, so typing
//! notices go out as the user types and incoming messages are printed above
//! the prompt without garbling the partial input.
//!
//! Commands: `/to NAME`, `/who`, `/help`, `/quit`; any other line is sent,
//! end-to-end encrypted, to the current partner.

use std::time::{Duration, Instant};

use super::account::Session;
use super::editor::{Edit, LineEditor};
use super::exit::{CliResult, Failure};
use super::find_user;
use super::screen::{clean, Screen};
use super::term::{self, TermMode};
use crate::client::{ClientError, E2eeError, Event, PeerSession};

/// How long input may pause before a typing notice is withdrawn.
const TYPING_IDLE: Duration = Duration::from_secs(5);
/// How long one loop turn waits for a key.
const KEY_POLL: Duration = Duration::from_millis(20);
/// How long one loop turn waits for the network.
const NET_POLL: Duration = Duration::from_millis(10);

const HELP: &str = "\
commands:
  /to NAME   talk to NAME (lines you type are sent to NAME, encrypted)
  /who       everyone, online or not, and who is typing
  /help      this text
  /quit      leave (also Ctrl-C, or Ctrl-D on an empty line)";

/// Runs the chat until the user quits or the connection ends.
pub fn run(session: Session) -> CliResult<()> {
    let keys = term::is_tty(term::STDIN);
    let mode = match keys {
        true => Some(
            TermMode::keys(term::STDIN)
                .map_err(|e| Failure::failed(format!("cannot set up the terminal: {e}")))?,
        ),
        false => None,
    };
    let mut chat = Chat::new(session, Screen::new(term::is_tty(term::STDOUT)));
    let result = chat.start().and_then(|()| chat.run_loop());
    chat.finish();
    drop(mode);
    result
}

struct Chat {
    session: Session,
    screen: Screen,
    editor: LineEditor,
    partner: Option<String>,
    users: Option<Vec<(String, bool)>>,
    /// Peers typing to us.
    typing: Vec<String>,
    /// The peer we told we are typing, and when we last typed.
    typing_to: Option<String>,
    last_key: Instant,
    quit: bool,
}

impl Chat {
    fn new(session: Session, screen: Screen) -> Chat {
        Chat {
            session,
            screen,
            editor: LineEditor::new(),
            partner: None,
            users: None,
            typing: Vec::new(),
            typing_to: None,
            last_key: Instant::now(),
            quit: false,
        }
    }

    fn start(&mut self) -> CliResult<()> {
        self.update_prompt();
        let name = clean(&self.session.name);
        let url = self.session.url.clone();
        self.say(&format!(
            "* logged in as {name} on {url}; /help for commands"
        ));
        self.session.client.open_home()?;
        Ok(())
    }

    fn run_loop(&mut self) -> CliResult<()> {
        while !self.quit {
            self.read_keys()?;
            self.read_events()?;
            self.typing_idle()?;
        }
        Ok(())
    }

    fn finish(mut self) {
        let _ = self.stop_typing();
        self.screen.finish();
        self.session.close();
    }

    fn say(&mut self, text: &str) {
        self.screen.line(text);
    }

    // ----- keys -----------------------------------------------------------

    fn read_keys(&mut self) -> CliResult<()> {
        let bytes = term::poll_read(term::STDIN, KEY_POLL)
            .map_err(|e| Failure::failed(format!("cannot read the keyboard: {e}")))?;
        match bytes {
            None => Ok(()),
            Some(b) if b.is_empty() => {
                self.quit = true;
                Ok(())
            }
            Some(bytes) => self.keys(&bytes),
        }
    }

    fn keys(&mut self, bytes: &[u8]) -> CliResult<()> {
        for &byte in bytes {
            match self.editor.feed(byte) {
                Edit::Nothing => {}
                Edit::Changed => self.input_changed()?,
                Edit::Submit(line) => {
                    self.screen.set_input("");
                    self.stop_typing()?;
                    self.command(line.trim())?;
                }
                Edit::Quit => self.quit = true,
            }
            if self.quit {
                break;
            }
        }
        Ok(())
    }

    fn input_changed(&mut self) -> CliResult<()> {
        let line = self.editor.line().to_string();
        self.screen.set_input(&line);
        if line.is_empty() || line.starts_with('/') {
            return self.stop_typing();
        }
        self.last_key = Instant::now();
        match (&self.typing_to, self.partner.clone()) {
            (None, Some(p)) if self.online(&p) => {
                self.session.client.typing(&p, true)?;
                self.typing_to = Some(p);
            }
            _ => {}
        }
        Ok(())
    }

    fn stop_typing(&mut self) -> CliResult<()> {
        if let Some(p) = self.typing_to.take() {
            self.session.client.typing(&p, false)?;
        }
        Ok(())
    }

    fn typing_idle(&mut self) -> CliResult<()> {
        if self.typing_to.is_some() && self.last_key.elapsed() >= TYPING_IDLE {
            self.stop_typing()?;
        }
        Ok(())
    }

    // ----- commands -------------------------------------------------------

    fn command(&mut self, line: &str) -> CliResult<()> {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "" => Ok(()),
            "/to" => self.pick(rest.trim()),
            "/who" => {
                self.who();
                Ok(())
            }
            "/help" => {
                self.say(HELP);
                Ok(())
            }
            "/quit" | "/exit" | "/q" => {
                self.quit = true;
                Ok(())
            }
            w if w.starts_with('/') => {
                self.say(&format!("! unknown command {}: try /help", clean(w)));
                Ok(())
            }
            _ => self.send(line),
        }
    }

    fn pick(&mut self, name: &str) -> CliResult<()> {
        if name.is_empty() {
            self.say("! usage: /to NAME");
            return Ok(());
        }
        let Some((peer, online)) = find_user(self.users.as_deref().unwrap_or(&[]), name) else {
            self.say(&format!("! no user named {} (try /who)", clean(name)));
            return Ok(());
        };
        self.stop_typing()?;
        self.partner = Some(peer.clone());
        self.update_prompt();
        let state = if online { "online" } else { "offline" };
        self.say(&format!("* talking to {} ({state})", clean(&peer)));
        let idle = self
            .session_with(&peer)
            .is_none_or(|s| !s.is_ready() && !s.in_progress());
        if online && idle {
            self.session.client.start_e2ee(&peer)?;
        }
        Ok(())
    }

    fn session_with(&self, peer: &str) -> Option<&PeerSession> {
        self.session.client.peers().and_then(|p| p.get(peer))
    }

    fn who(&mut self) {
        let Some(users) = self.users.clone() else {
            self.say("* the user list has not arrived yet");
            return;
        };
        let mut text = String::from("users:");
        for (name, online) in &users {
            let mark = if *online { "online " } else { "offline" };
            let me = same(name, &self.session.name);
            let extra = match (me, self.is_typing(name)) {
                (true, _) => "  (you)",
                (false, true) => "  typing...",
                _ => "",
            };
            text.push_str(&format!("\n  {mark}  {}{extra}", clean(name)));
        }
        self.say(&text);
    }

    fn send(&mut self, text: &str) -> CliResult<()> {
        let Some(peer) = self.partner.clone() else {
            self.say("! nobody to send to: pick someone with /to NAME");
            return Ok(());
        };
        match self.session.client.send_message(&peer, text) {
            Ok(()) => {}
            Err(ClientError::E2ee(E2eeError::NoSession(_))) => {
                let p = clean(&peer);
                self.say(&format!(
                    "! {p} is offline and has no secure session with you yet: \
                     the first message needs {p} online"
                ));
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        let time = term::now_hhmm();
        self.say(&format!(
            "[{time}] you -> {}: {}",
            clean(&peer),
            clean(text)
        ));
        if self.session_with(&peer).is_some_and(|s| s.queued() > 0) {
            self.say("  (sent once the secure session is ready)");
        }
        self.session.save_peers();
        Ok(())
    }

    // ----- network --------------------------------------------------------

    fn read_events(&mut self) -> CliResult<()> {
        loop {
            match self.session.client.next_event(NET_POLL) {
                Ok(Some(event)) => self.event(event),
                Ok(None) => return Ok(()),
                Err(ClientError::Closed { .. }) => {
                    return Err(Failure::network("the server closed the connection"))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Message { from, text } => {
                self.set_typing(&from, false);
                let time = term::now_hhmm();
                self.say(&format!("[{time}] {}: {}", clean(&from), clean(&text)));
            }
            Event::UserList(users) => self.user_list(users),
            Event::Typing { from, is_typing } => self.set_typing(&from, is_typing),
            Event::PeerReady(peer) => {
                self.say(&format!("* secure session with {} ready", clean(&peer)));
                self.session.save_peers();
            }
            Event::PeerFailed { peer, reason } => {
                let peer = clean(&peer);
                self.say(&format!("! secure session with {peer} failed: {reason}"));
            }
            Event::PeerDropped { from, reason } => {
                let from = clean(&from);
                self.say(&format!("! a message from {from} was dropped: {reason}"));
            }
            Event::Error(m) => self.say(&format!("! server: {}", clean(&m))),
            Event::PublicKey { .. } | Event::Other(_) => {}
        }
    }

    fn user_list(&mut self, users: Vec<(String, bool)>) {
        let old = self.users.replace(users.clone());
        match old {
            None => self.who(),
            Some(old) => {
                for (name, online) in &users {
                    let was = find_user(&old, name).map(|(_, o)| o);
                    if was != Some(*online) && !same(name, &self.session.name) {
                        let now = if *online { "is online" } else { "went offline" };
                        self.say(&format!("* {} {now}", clean(name)));
                    }
                    if !online {
                        self.set_typing(name, false);
                    }
                }
            }
        }
        self.update_prompt();
    }

    // ----- state shown in the prompt --------------------------------------

    fn online(&self, name: &str) -> bool {
        let users = self.users.as_deref().unwrap_or(&[]);
        find_user(users, name).is_some_and(|(_, online)| online)
    }

    fn is_typing(&self, name: &str) -> bool {
        self.typing.iter().any(|t| same(t, name))
    }

    fn set_typing(&mut self, name: &str, typing: bool) {
        self.typing.retain(|t| !same(t, name));
        if typing {
            self.typing.push(name.to_string());
        }
        self.update_prompt();
    }

    fn update_prompt(&mut self) {
        let mut prompt = String::new();
        if !self.typing.is_empty() {
            let names: Vec<String> = self.typing.iter().map(|t| clean(t)).collect();
            prompt.push_str(&format!("({} typing...) ", names.join(", ")));
        }
        match self.partner.clone() {
            Some(p) if self.online(&p) => prompt.push_str(&format!("to {}> ", clean(&p))),
            Some(p) => prompt.push_str(&format!("to {} (offline)> ", clean(&p))),
            None => prompt.push_str("(/to NAME)> "),
        }
        self.screen.set_prompt(prompt);
    }
}

fn same(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}
