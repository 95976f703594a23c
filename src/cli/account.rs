//! Accounts: registering, and logging in as the mobile client does (the
//! password the first time on this machine, with a fresh identity key that
//! is saved only after `LOGIN_SUCCESS`; the challenge signed with the saved
//! key afterwards). A logged-in [`Session`] restores and saves its peer
//! session keys.

use super::exit::{CliResult, Failure, AUTH};
use super::files::{Files, UserFiles};
use super::password::{read_password, PasswordSource};
use crate::client::{AuthReply, Client, Identity, REGISTER_FAILED_USERNAME_EXISTS};

/// A logged-in user.
pub struct Session {
    pub client: Client,
    /// The name as the user typed it.
    pub name: String,
    pub url: String,
    files: UserFiles,
}

impl Session {
    /// Saves the peer session keys; a failure is reported, not fatal.
    pub fn save_peers(&self) {
        if let Some(saved) = self.client.save_peers() {
            if let Err(e) = self.files.save_peers(&saved) {
                eprintln!("chat_client: warning: {}", e.message);
            }
        }
    }

    /// Saves the peer keys and closes the connection.
    pub fn close(mut self) {
        self.save_peers();
        self.client.close();
    }
}

fn connect(url: &str) -> CliResult<Client> {
    Client::connect(url).map_err(|e| {
        let f = Failure::from(e);
        Failure::new(f.code, format!("cannot connect to {url}: {}", f.message))
    })
}

fn refused(what: &str, reply: &AuthReply) -> Failure {
    let detail = reply.message.as_deref().unwrap_or(&reply.status);
    Failure::new(AUTH, format!("{what} refused: {detail}"))
}

/// `register NAME`: a new account with a fresh identity key, saved once the
/// server has accepted it.
pub fn register(files: &Files, url: &str, name: &str, source: PasswordSource) -> CliResult<()> {
    let password = read_password(source, true)?;
    let identity = Identity::generate();
    let mut client = connect(url)?;
    let reply = client.register(name, &password, &identity)?;
    client.close();
    if reply.status == REGISTER_FAILED_USERNAME_EXISTS {
        return Err(Failure::new(AUTH, format!("the name {name} is taken")));
    }
    if !reply.is_success() {
        return Err(refused("registration", &reply));
    }
    files.user(name).save_identity(name, &identity)?;
    files.set_last_user(name)
}

/// Logs `name` in: with the saved key if there is one, else (or if the
/// server no longer accepts that key) with the password from `source`.
pub fn login(
    files: &Files,
    url: &str,
    name: &str,
    source: Option<PasswordSource>,
) -> CliResult<Session> {
    let user = files.user(name);
    if let Some((saved_name, identity)) = user.load_identity()? {
        if let Some(client) = challenge_login(url, &saved_name, &identity)? {
            return finish(files, url, &saved_name, client);
        }
        if source.is_none() {
            return Err(Failure::new(
                AUTH,
                format!("the key saved for {name} was refused: log in again with chat_client login {name}"),
            ));
        }
    }
    let Some(source) = source else {
        return Err(Failure::new(
            AUTH,
            format!("no saved key for {name} on this machine: run chat_client login {name}"),
        ));
    };
    let client = password_login(files, url, name, source)?;
    finish(files, url, name, client)
}

/// Logs in the user picked with `--user`, else the last one who logged in.
pub fn login_saved(
    files: &Files,
    url: &str,
    user: Option<&str>,
    source: Option<PasswordSource>,
) -> CliResult<Session> {
    let name = match user {
        Some(name) => name.to_string(),
        None => files.last_user()?.ok_or_else(|| {
            Failure::usage(
                "no user has logged in here yet: chat_client login NAME (or --user NAME)",
            )
        })?,
    };
    login(files, url, &name, source)
}

/// The challenge login; `None` if the server refused the signature.
fn challenge_login(url: &str, name: &str, identity: &Identity) -> CliResult<Option<Client>> {
    let mut client = connect(url)?;
    let reply = client.login_challenge(name, identity)?;
    if reply.is_success() {
        return Ok(Some(client));
    }
    client.close();
    Ok(None)
}

/// The password login with a fresh identity key, saved after success.
fn password_login(
    files: &Files,
    url: &str,
    name: &str,
    source: PasswordSource,
) -> CliResult<Client> {
    let password = read_password(source, false)?;
    let identity = Identity::generate();
    let mut client = connect(url)?;
    let reply = client.login_password(name, &password, Some(&identity))?;
    if !reply.is_success() {
        client.close();
        return Err(match reply.message {
            Some(_) => refused("login", &reply),
            None => Failure::new(AUTH, "login failed: wrong name or password"),
        });
    }
    files.user(name).save_identity(name, &identity)?;
    Ok(client)
}

fn finish(files: &Files, url: &str, name: &str, mut client: Client) -> CliResult<Session> {
    files.set_last_user(name)?;
    let user = files.user(name);
    if let Some(saved) = user.load_peers()? {
        if let Err(e) = client.restore_peers(&saved) {
            eprintln!("chat_client: warning: saved peer keys ignored: {e}");
        }
    }
    Ok(Session {
        client,
        name: name.to_string(),
        url: url.to_string(),
        files: user,
    })
}
