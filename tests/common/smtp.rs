//! A small SMTP server inside the test process, for the mail tests.
//!
//! Hand-written on purpose: it is a test-only peer that speaks the subset of RFC 5321 that
//! muster's real client (lettre, without TLS or AUTH) uses — greeting, EHLO/HELO, MAIL FROM,
//! RCPT TO, DATA with dot-stuffing, RSET, NOOP, QUIT — and it can be told to refuse for a
//! while (`451`) or to reject one recipient for good (`550`). A mail-server crate would have
//! cost a dependency and given no such switches.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A message the server accepted.
#[derive(Debug, Clone)]
pub struct Received {
    /// The envelope sender (MAIL FROM).
    pub from: String,
    /// The envelope recipients (RCPT TO) that were accepted.
    pub to: Vec<String>,
    /// The message as sent after DATA, dot-stuffing undone, without the final `.` line.
    pub data: Vec<u8>,
}

#[derive(Default)]
struct State {
    messages: Mutex<Vec<Received>>,
    /// How many of the next MAIL FROM commands get `451`.
    refuse: AtomicUsize,
    /// How many commands were refused with `451` so far.
    refused: AtomicUsize,
    /// Recipients whose RCPT TO gets `550` (lower case).
    rejected: Mutex<HashSet<String>>,
    /// RCPT TO commands answered with `550` so far.
    rejections: AtomicUsize,
    connections: AtomicUsize,
}

/// The server; it stops when dropped.
pub struct SmtpServer {
    port: u16,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl SmtpServer {
    /// Listens on 127.0.0.1 on a free port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind SMTP");
        let port = listener.local_addr().expect("SMTP address").port();
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    // A client that goes away mid-session is not the server's problem.
                    let _ = session(stream, state).await;
                });
            }
        });
        Self { port, state, task }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The next `n` MAIL FROM commands are answered `451 4.3.0 try again later`.
    pub fn refuse_next(&self, n: usize) {
        self.state.refuse.store(n, Ordering::SeqCst);
    }

    /// RCPT TO for `address` is answered `550 5.1.1 no such user` from now on.
    pub fn reject_recipient(&self, address: &str) {
        self.state
            .rejected
            .lock()
            .unwrap()
            .insert(address.to_ascii_lowercase());
    }

    /// Every message accepted so far.
    pub fn messages(&self) -> Vec<Received> {
        self.state.messages.lock().unwrap().clone()
    }

    /// The messages accepted since the last call (or the start), removing them.
    pub fn take(&self) -> Vec<Received> {
        std::mem::take(&mut *self.state.messages.lock().unwrap())
    }

    /// How many commands were refused with `451`.
    pub fn refusals(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// How many recipients were rejected with `550`.
    pub fn rejections(&self) -> usize {
        self.state.rejections.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The address inside `<…>` of a MAIL FROM / RCPT TO argument (parameters after it ignored).
fn path_of(argument: &str) -> Option<String> {
    let argument = argument.trim_start();
    let start = argument.find('<')?;
    let end = start + argument[start..].find('>')?;
    Some(argument[start + 1..end].to_string())
}

async fn session(stream: TcpStream, state: Arc<State>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write
        .write_all(b"220 mail.test.example ESMTP muster-test\r\n")
        .await?;
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if read.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let (verb, argument) = match text.split_once([' ', ':']) {
            Some((verb, _)) => (verb.to_ascii_uppercase(), &text[verb.len()..]),
            None => (text.to_ascii_uppercase(), ""),
        };
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => {
                from = None;
                to.clear();
                b"250-mail.test.example greets you\r\n250-8BITMIME\r\n250-SIZE 10485760\r\n250 SMTPUTF8\r\n"
            }
            "HELO" => {
                from = None;
                to.clear();
                b"250 mail.test.example\r\n"
            }
            "MAIL" => {
                let Some(rest) = strip_keyword(argument, "FROM:") else {
                    write
                        .write_all(b"501 5.5.4 syntax: MAIL FROM:<address>\r\n")
                        .await?;
                    continue;
                };
                if from.is_some() {
                    b"503 5.5.1 nested MAIL command\r\n"
                } else if take_one(&state.refuse) {
                    state.refused.fetch_add(1, Ordering::SeqCst);
                    b"451 4.3.0 try again later\r\n"
                } else {
                    match path_of(rest) {
                        Some(address) => {
                            from = Some(address);
                            b"250 2.1.0 ok\r\n"
                        }
                        None => b"501 5.1.7 bad sender address syntax\r\n",
                    }
                }
            }
            "RCPT" => {
                let Some(rest) = strip_keyword(argument, "TO:") else {
                    write
                        .write_all(b"501 5.5.4 syntax: RCPT TO:<address>\r\n")
                        .await?;
                    continue;
                };
                match (from.is_some(), path_of(rest)) {
                    (false, _) => b"503 5.5.1 need MAIL before RCPT\r\n",
                    (true, None) => b"501 5.1.3 bad recipient address syntax\r\n",
                    (true, Some(address)) => {
                        let rejected = state
                            .rejected
                            .lock()
                            .unwrap()
                            .contains(&address.to_ascii_lowercase());
                        if rejected {
                            state.rejections.fetch_add(1, Ordering::SeqCst);
                            b"550 5.1.1 no such user\r\n"
                        } else {
                            to.push(address);
                            b"250 2.1.5 ok\r\n"
                        }
                    }
                }
            }
            "DATA" => {
                if from.is_none() || to.is_empty() {
                    b"503 5.5.1 need MAIL and RCPT before DATA\r\n"
                } else {
                    write
                        .write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                        .await?;
                    let data = read_data(&mut read).await?;
                    state.messages.lock().unwrap().push(Received {
                        from: from.take().unwrap_or_default(),
                        to: std::mem::take(&mut to),
                        data,
                    });
                    b"250 2.0.0 queued\r\n"
                }
            }
            "RSET" => {
                from = None;
                to.clear();
                b"250 2.0.0 ok\r\n"
            }
            "NOOP" => b"250 2.0.0 ok\r\n",
            "QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            _ => b"500 5.5.2 command not recognized\r\n",
        };
        write.write_all(reply).await?;
    }
}

/// `FROM:<a>` / `TO:<a>` after the verb, case-insensitively.
fn strip_keyword<'a>(argument: &'a str, keyword: &str) -> Option<&'a str> {
    let argument = argument.trim_start();
    let head = argument.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| &argument[keyword.len()..])
}

/// Decrements `counter` if it is above zero; true if it did.
fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// The message after DATA up to the line holding a single `.`, with leading dots unstuffed.
async fn read_data<R: tokio::io::AsyncBufRead + Unpin>(read: &mut R) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if read.read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed during DATA",
            ));
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(data);
        }
        let unstuffed = if line.first() == Some(&b'.') {
            &line[1..]
        } else {
            &line[..]
        };
        data.extend_from_slice(unstuffed);
    }
}
